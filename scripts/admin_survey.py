"""Calls every AdminClient method of confluent-kafka and kafka-python once against a running
osprey and prints `works` or `FAILS` with the reason per method (the README's list).

    .venv/bin/python scripts/admin_survey.py HOST:PORT
"""

import sys
import uuid
from confluent_kafka import Consumer, Producer, TopicPartition, ConsumerGroupTopicPartitions
from confluent_kafka.admin import *
from confluent_kafka import ElectionType, TopicCollection
bs = sys.argv[1]
ck = AdminClient({"bootstrap.servers": bs})
T = "sv-" + uuid.uuid4().hex[:6]; G = "g-" + uuid.uuid4().hex[:6]
def res(f):
    if isinstance(f, dict):
        return {k: v.result(15) for k, v in f.items()}
    if hasattr(f, "result"):
        return f.result(15)
    return f
def run(name, fn):
    try:
        r = res(fn())
        print(f"CK {name}: works -> {str(r)[:150]}")
    except Exception as e:
        print(f"CK {name}: FAILS -> {type(e).__name__}: {str(e)[:200]}")
run("create_topics", lambda: ck.create_topics([NewTopic(T, 2, 1)]))
p = Producer({"bootstrap.servers": bs}); [p.produce(T, b"x", partition=0) for _ in range(10)]; p.flush(10)
c = Consumer({"bootstrap.servers": bs, "group.id": G}); c.commit(offsets=[TopicPartition(T, 0, 3)], asynchronous=False); c.close()
run("list_topics", lambda: ck.list_topics(timeout=10).topics.keys())
run("describe_topics", lambda: ck.describe_topics(TopicCollection([T])))
run("describe_cluster", lambda: ck.describe_cluster())
run("create_partitions", lambda: ck.create_partitions([NewPartitions(T, 3)]))
r = ConfigResource(ResourceType.TOPIC, T)
run("describe_configs", lambda: ck.describe_configs([r]))
run("alter_configs", lambda: ck.alter_configs([ConfigResource(ResourceType.TOPIC, T, set_config={"retention.ms": "100000"})]))
run("incremental_alter_configs", lambda: ck.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, T, incremental_configs=[ConfigEntry("retention.ms", "200000", incremental_operation=AlterConfigOpType.SET)])]))
run("list_offsets", lambda: ck.list_offsets({TopicPartition(T, 0): OffsetSpec.latest()}))
run("delete_records", lambda: ck.delete_records([TopicPartition(T, 0, 2)]))
run("list_consumer_groups", lambda: ck.list_consumer_groups())
run("list_groups (deprecated)", lambda: ck.list_groups(timeout=10))
run("describe_consumer_groups", lambda: ck.describe_consumer_groups([G]))
run("list_consumer_group_offsets", lambda: ck.list_consumer_group_offsets([ConsumerGroupTopicPartitions(G)]))
run("alter_consumer_group_offsets", lambda: ck.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(G, [TopicPartition(T, 0, 5)])]))
run("elect_leaders", lambda: ck.elect_leaders(ElectionType.PREFERRED, [TopicPartition(T, 0)]))
acl = AclBinding(ResourceType.TOPIC, T, ResourcePatternType.LITERAL, "User:a", "*", AclOperation.READ, AclPermissionType.ALLOW)
run("create_acls", lambda: ck.create_acls([acl]))
run("describe_acls", lambda: ck.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)))
run("delete_acls", lambda: ck.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)]))
run("describe_user_scram_credentials", lambda: ck.describe_user_scram_credentials(["a"]))
run("alter_user_scram_credentials", lambda: ck.alter_user_scram_credentials([UserScramCredentialDeletion("a", ScramMechanism.SCRAM_SHA_256)]))
run("delete_consumer_groups", lambda: ck.delete_consumer_groups([G]))
run("delete_topics", lambda: ck.delete_topics([T]))

from kafka.admin import KafkaAdminClient, NewTopic as KNT, NewPartitions as KNP, ConfigResource as KCR, ConfigResourceType, ACL, ACLFilter, ResourcePattern, ResourcePatternFilter, ACLOperation, ACLPermissionType, ResourceType as KRT, ACLResourcePatternType
from kafka import TopicPartition as KTP
from kafka.structs import OffsetAndMetadata, TopicPartitionReplica
from kafka.admin import AbortTransactionSpec, MemberToRemove
kp = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=10000)
T2 = "kv-" + uuid.uuid4().hex[:6]; G2 = "kg-" + uuid.uuid4().hex[:6]
def krun(name, fn):
    try:
        r = fn()
        print(f"KP {name}: works -> {str(r)[:150]}")
    except Exception as e:
        print(f"KP {name}: FAILS -> {type(e).__name__}: {str(e)[:200]}")
krun("create_topics", lambda: kp.create_topics([KNT(T2, 2, 1)]))
p = Producer({"bootstrap.servers": bs}); [p.produce(T2, b"x", partition=0) for _ in range(10)]; p.flush(10)
c = Consumer({"bootstrap.servers": bs, "group.id": G2}); c.commit(offsets=[TopicPartition(T2, 0, 3), TopicPartition(T2, 1, 0)], asynchronous=False); c.close()
krun("list_topics", lambda: kp.list_topics())
krun("describe_topics", lambda: kp.describe_topics([T2]))
krun("describe_topic_partitions", lambda: kp.describe_topic_partitions([T2]))
krun("describe_cluster", lambda: kp.describe_cluster())
krun("wait_for_topics", lambda: kp.wait_for_topics([T2]))
krun("api_versions", lambda: kp.api_versions())
krun("get_broker_version_data", lambda: kp.get_broker_version_data(0))
krun("describe_features", lambda: kp.describe_features())
krun("update_features", lambda: kp.update_features({}))
krun("describe_metadata_quorum", lambda: kp.describe_metadata_quorum())
krun("create_partitions", lambda: kp.create_partitions({T2: KNP(3)}))
krun("describe_configs", lambda: kp.describe_configs([KCR(ConfigResourceType.TOPIC, T2)]))
krun("alter_configs", lambda: kp.alter_configs([KCR(ConfigResourceType.TOPIC, T2, configs={"retention.ms": "100000"})]))
krun("reset_configs", lambda: kp.reset_configs([KCR(ConfigResourceType.TOPIC, T2, configs=["retention.ms"])]))
krun("list_config_resources", lambda: kp.list_config_resources())
krun("list_partition_offsets", lambda: kp.list_partition_offsets({KTP(T2, 0): -1}))
krun("delete_records", lambda: kp.delete_records({KTP(T2, 0): 2}))
krun("describe_log_dirs", lambda: kp.describe_log_dirs())
krun("alter_replica_log_dirs", lambda: kp.alter_replica_log_dirs({TopicPartitionReplica(T2, 0, 0): "/tmp/x"}))
krun("list_partition_reassignments", lambda: kp.list_partition_reassignments())
krun("alter_partition_reassignments", lambda: kp.alter_partition_reassignments({}))
krun("elect_leaders", lambda: kp.elect_leaders(0, [KTP(T2, 0)]))
krun("list_groups", lambda: kp.list_groups())
krun("describe_groups", lambda: kp.describe_groups([G2]))
krun("list_group_offsets", lambda: kp.list_group_offsets(G2))
krun("alter_group_offsets", lambda: kp.alter_group_offsets(G2, {KTP(T2, 0): OffsetAndMetadata(5, "", -1)}))
krun("reset_group_offsets", lambda: kp.reset_group_offsets(G2, {KTP(T2, 0): 0}))
krun("delete_group_offsets", lambda: kp.delete_group_offsets(G2, [KTP(T2, 1)]))
krun("remove_group_members", lambda: kp.remove_group_members(G2, [MemberToRemove(member_id="x")]))
krun("describe_producers", lambda: kp.describe_producers([KTP(T2, 0)]))
krun("list_transactions", lambda: kp.list_transactions())
krun("describe_transactions", lambda: kp.describe_transactions(["x"]))
krun("find_hanging_transactions", lambda: kp.find_hanging_transactions())
krun("abort_transaction", lambda: kp.abort_transaction(AbortTransactionSpec(KTP(T2, 0), 1, 0, -1)))
krun("create_acls", lambda: kp.create_acls([ACL("User:a", "*", ACLOperation.READ, ACLPermissionType.ALLOW, ResourcePattern(KRT.TOPIC, T2))]))
krun("describe_acls", lambda: kp.describe_acls(ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY, ResourcePatternFilter(KRT.ANY, None, ACLResourcePatternType.ANY))))
krun("delete_acls", lambda: kp.delete_acls([ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY, ResourcePatternFilter(KRT.ANY, None, ACLResourcePatternType.ANY))]))
krun("describe_user_scram_credentials", lambda: kp.describe_user_scram_credentials())
krun("alter_user_scram_credentials", lambda: kp.alter_user_scram_credentials([]))
krun("delete_groups", lambda: kp.delete_groups([G2]))
krun("delete_topics", lambda: kp.delete_topics([T2]))
kp.close()
