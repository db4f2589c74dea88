//! A topic delete that a crash interrupts never brings the deleted data back.
//!
//! Deleting a topic commits the delete in the controller quorum, then each partition
//! directory is renamed to `<dir>.<unique>-delete` (durably) and only then removed. A crash
//! can stop this at two points, and each leaves a state these tests rebuild by hand from a
//! copy of the partition taken before the delete (the broker is killed with SIGKILL right
//! after it, so only the files matter):
//! - between the quorum's commit and the rename: the directory keeps its live name, and
//!   its `partition.metadata` names the deleted topic's id;
//! - between the rename and the removal: a `-delete` directory, possibly half emptied.

mod common;

use std::path::Path;

use common::*;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::records::Compression;

const TOPIC: &str = "doomed";
const OLD_RECORDS: usize = 20;

fn topic_error(broker: &Broker, topic: &str) -> i16 {
    let md = broker.connect().request(
        &MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic))),
            ]))
            .with_allow_auto_topic_creation(false),
        12,
    );
    md.topics[0].error_code
}

/// Names of the entries of `<data>/topics`.
fn topic_dirs(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("topics"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Creates the topic, stores OLD_RECORDS records (acks=all) and returns a copy of its
/// partition directory taken while the broker still runs; then deletes the topic and kills
/// the broker.
fn old_topic_then_delete(data: &Path, copy: &Path) {
    let mut broker = Broker::start_in(data, 1, &[]);
    assert_eq!(create_topic(&mut broker.connect(), TOPIC, 1, &[]), 0);
    let mut c = leader_conn(&broker, TOPIC, 0);
    let (err, base) = produce_to(
        &mut c,
        TOPIC,
        0,
        -1,
        batch(OLD_RECORDS, 100, Compression::None),
    );
    assert_eq!((err, base), (0, 0));
    let live = data.join("topics").join(format!("{TOPIC}-0"));
    assert!(
        live.join("partition.metadata").exists(),
        "topic id recorded"
    );
    copy_tree(&live, copy);
    assert_eq!(delete_topic(&mut broker.connect(), TOPIC), 0);
    // The delete completed: no directory of the topic, renamed or not, is left.
    assert!(topic_dirs(data).is_empty(), "{:?}", topic_dirs(data));
    broker.kill();
}

/// After the crash state is in place: the restarted broker does not know the topic, and a
/// topic created again under the name starts empty, takes new records and keeps only them
/// across another restart.
fn recreate_starts_empty(data: &Path) {
    let mut broker = Broker::start_in(data, 1, &[]);
    assert!(
        !topic_dirs(data).iter().any(|d| d.ends_with("-delete")),
        "start-up removed the half-deleted directory: {:?}",
        topic_dirs(data)
    );
    assert_eq!(topic_error(&broker, TOPIC), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(create_topic(&mut broker.connect(), TOPIC, 1, &[]), 0);
    let mut c = leader_conn(&broker, TOPIC, 0);
    let (err, hw, log_start, bytes) = fetch_once(&mut c, TOPIC, 0, 0);
    assert_eq!((err, hw, log_start), (0, 0, 0), "new topic is empty");
    assert!(bytes.is_empty());
    let (err, base) = produce_to(&mut c, TOPIC, 0, -1, batch(3, 10, Compression::None));
    assert_eq!((err, base), (0, 0));
    broker.kill();

    let broker = Broker::start_in(data, 1, &[]);
    let mut c = leader_conn(&broker, TOPIC, 0);
    let (hw, records) = fetch_all_from(&mut c, TOPIC, 0, 0);
    assert_eq!(hw, 3);
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.value.as_ref().is_some_and(|v| v.len() == 10))
    );
}

// A crash between the quorum's commit of the delete and the rename: the partition directory
// is still there under its live name after the restart. It names the deleted topic's id,
// so the new topic of the same name discards it instead of recovering its 20 records.
#[test]
fn crash_before_the_rename() {
    let tmp = tmpdir();
    let data = tmp.path().join("data");
    let copy = tmp.path().join("copy");
    old_topic_then_delete(&data, &copy);
    copy_tree(&copy, &data.join("topics").join(format!("{TOPIC}-0")));
    recreate_starts_empty(&data);
}

// A crash between the rename and the removal, once with the renamed directory whole and
// once half emptied (the segment gone, indexes and snapshots left, as remove_dir_all may
// stop): start-up removes both, and the new topic starts empty.
#[test]
fn crash_between_rename_and_removal() {
    let tmp = tmpdir();
    let data = tmp.path().join("data");
    let copy = tmp.path().join("copy");
    old_topic_then_delete(&data, &copy);
    let topics = data.join("topics");
    copy_tree(&copy, &topics.join(format!("{TOPIC}-0.1a2b3c-delete")));
    let half = topics.join(format!("{TOPIC}-0.4d5e6f-delete"));
    copy_tree(&copy, &half);
    let mut logs = 0;
    for e in std::fs::read_dir(&half).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            std::fs::remove_file(p).unwrap();
            logs += 1;
        }
    }
    assert!(logs > 0, "the copy held a segment");
    recreate_starts_empty(&data);
}
