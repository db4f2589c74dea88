//! shards: per-core partition storage (placeholder until the storage engine lands).
