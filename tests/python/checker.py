"""A checker in the spirit of Jepsen's Kafka queue workload: given what producers saw
acknowledged and what consumers read, it finds acknowledged writes that were lost or
duplicated, reads out of order within a partition, and values a consumer saw during the run
that are gone from the final log (reads of data that was never committed)."""

from dataclasses import dataclass, field


@dataclass
class Report:
    acknowledged: int = 0
    read: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    reordered: list = field(default_factory=list)
    vanished: list = field(default_factory=list)

    @property
    def ok(self):
        return not (self.lost or self.duplicated or self.reordered or self.vanished)

    def __str__(self):
        return (f"acknowledged={self.acknowledged} read={self.read} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} reordered={len(self.reordered)} "
                f"vanished={len(self.vanished)} (first: lost {self.lost[:5]} dup {self.duplicated[:5]} "
                f"reordered {self.reordered[:3]} vanished {self.vanished[:5]})")


def check(acked, final, observed=(), key_of=None):
    """acked: values whose delivery was acknowledged. final: {partition: [(offset, value)]}
    read from the start after the run. observed: values consumers saw during the run.
    key_of(value) -> key: values of one key were sent in increasing order by one producer,
    so they must appear in increasing order within their partition."""
    r = Report(acknowledged=len(acked))
    seen = {}
    for part, msgs in final.items():
        r.read += len(msgs)
        offsets = [o for o, _ in msgs]
        if offsets != sorted(offsets) or len(set(offsets)) != len(offsets):
            r.reordered.append((part, "offsets not increasing"))
        last_by_key = {}
        for o, v in msgs:
            if v in seen:
                r.duplicated.append(v)
            seen[v] = (part, o)
            if key_of is not None:
                k = key_of(v)
                if k in last_by_key and last_by_key[k] > v:
                    r.reordered.append((part, o, last_by_key[k], v))
                last_by_key[k] = v
    r.lost = sorted(v for v in acked if v not in seen)
    r.vanished = sorted(v for v in set(observed) if v not in seen)
    return r
