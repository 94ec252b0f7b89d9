use super::*;
use serde_json::json;

#[test]
fn revisions_history_and_preconditions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("configs.db");
    let db = Db::open(&path).expect("open");
    let c1 = json!({"device_type": "linux", "metrics": {"a": true}});
    assert_eq!(
        db.put("edge-01", &c1, "linux", Precondition::Absent)
            .expect("put"),
        WriteOutcome::Created(1)
    );
    assert_eq!(
        db.put("edge-01", &c1, "linux", Precondition::Absent)
            .expect("put"),
        WriteOutcome::PreconditionFailed(Some(1))
    );
    let c2 = json!({"device_type": "linux", "metrics": {"a": false}});
    assert_eq!(
        db.put("edge-01", &c2, "linux", Precondition::Revision(vec![1]))
            .expect("put"),
        WriteOutcome::Updated(2)
    );
    // A writer that still holds revision 1 loses.
    assert_eq!(
        db.put("edge-01", &c1, "linux", Precondition::Revision(vec![1]))
            .expect("put"),
        WriteOutcome::PreconditionFailed(Some(2))
    );
    assert_eq!(
        db.delete("edge-01", Precondition::Revision(vec![2]))
            .expect("delete"),
        WriteOutcome::Deleted(3)
    );
    assert!(db.get("edge-01").is_none());
    // Created again: the revisions go on, so an old ETag never matches.
    assert_eq!(
        db.put("edge-01", &c1, "linux", Precondition::None)
            .expect("put"),
        WriteOutcome::Created(4)
    );
    db.touch("edge-01", None);
    assert_eq!(db.flush_contacts().expect("flush"), 1);
    drop(db);

    // Everything is on disk.
    let db = Db::open(&path).expect("reopen");
    let e = db.get("edge-01").expect("entry");
    assert_eq!(e.revision, 4);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&e.config).expect("json"),
        c1
    );
    assert!(db.last_contact("edge-01").is_some());
    let history = db.history("edge-01", 100).expect("history");
    let revisions: Vec<u64> = history.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, [1, 2, 3, 4]);
    assert_eq!(history[1].config, Some(c2));
    assert_eq!(history[2].config, None, "the deletion");
    assert_eq!(db.history("edge-01", 2).expect("history").len(), 2);
    assert_eq!(
        db.delete("nobody", Precondition::None).expect("delete"),
        WriteOutcome::NotFound
    );
}

fn effective(db: &Db, id: &str) -> serde_json::Value {
    serde_json::from_slice(&db.get(id).expect("device").config).expect("json")
}

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().expect("object").clone()
}

#[test]
fn groups_layer_under_device_overrides_and_every_change_is_a_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("configs.db");
    let db = Db::open(&path).expect("open");
    let jetsons = Rules::parse(&json!({"device_type": "jetson_*"})).expect("rules");
    let (outcome, members) = db
        .put_group(
            "jetsons",
            doc(json!({"metrics": {"gpu": false}})),
            Some(jetsons),
            Precondition::Absent,
        )
        .expect("group");
    assert_eq!((outcome, members), (WriteOutcome::Created(1), 0));
    // Registering: the file is the base, the matching group wins over it, and
    // a second revision holds that.
    let file = json!({"device_type": "jetson_orin", "interval": 15, "metrics": {"gpu": true, "cpu": true}});
    assert_eq!(
        db.put("orin-1", &file, "jetson_orin", Precondition::Absent)
            .expect("put"),
        WriteOutcome::Created(1)
    );
    let entry = db.get("orin-1").expect("entry");
    assert_eq!(entry.revision, 2);
    assert_eq!(entry.groups, ["jetsons"]);
    assert_eq!(effective(&db, "orin-1")["metrics"]["gpu"], false);
    // A Pi does not match.
    let pi = json!({"device_type": "raspberry_pi", "metrics": {"gpu": true}});
    db.put("pi-1", &pi, "raspberry_pi", Precondition::None)
        .expect("put");
    assert_eq!(db.get("pi-1").expect("pi").revision, 1);
    // The device switches gpu on (over revision 2): an override.
    let mut body = effective(&db, "orin-1");
    body["metrics"]["gpu"] = json!(true);
    assert_eq!(
        db.put(
            "orin-1",
            &body,
            "jetson_orin",
            Precondition::Revision(vec![2])
        )
        .expect("put"),
        WriteOutcome::Updated(3)
    );
    assert_eq!(db.get("orin-1").expect("entry").overrides, 1);
    // The group changes another key: every member gets a new revision, the
    // override stays; a stale If-Match on the group fails.
    assert_eq!(
        db.put_group(
            "jetsons",
            doc(json!({"metrics": {"gpu": false}, "interval": 30})),
            None,
            Precondition::Revision(vec![7])
        )
        .expect("stale")
        .0,
        WriteOutcome::PreconditionFailed(Some(1))
    );
    let rules = Rules::parse(&json!({"device_type": "jetson_*"})).expect("rules");
    assert_eq!(
        db.put_group(
            "jetsons",
            doc(json!({"metrics": {"gpu": false}, "interval": 30})),
            Some(rules),
            Precondition::Revision(vec![1])
        )
        .expect("group"),
        (WriteOutcome::Updated(2), 1)
    );
    let now = effective(&db, "orin-1");
    assert_eq!(
        (now["interval"].clone(), now["metrics"]["gpu"].clone()),
        (json!(30), json!(true))
    );
    assert_eq!(db.get("orin-1").expect("entry").revision, 4);
    assert_eq!(db.get("pi-1").expect("pi").revision, 1, "not a member");
    // A second, assigned group later in the order wins over the first.
    db.put_group("lab", doc(json!({"interval": 5})), None, Precondition::None)
        .expect("lab");
    assert_eq!(
        db.set_groups(
            "orin-1",
            vec!["lab".into()],
            Precondition::Revision(vec![4])
        )
        .expect("assign"),
        WriteOutcome::Updated(5)
    );
    assert_eq!(db.get("orin-1").expect("entry").groups, ["jetsons", "lab"]);
    assert_eq!(effective(&db, "orin-1")["interval"], 5);
    assert_eq!(
        db.set_groups("orin-1", vec!["nope".into()], Precondition::None)
            .expect("assign"),
        WriteOutcome::Missing("Unknown group: nope".into())
    );
    // Dropping the override brings the group's value back.
    assert_eq!(
        db.drop_override(
            "orin-1",
            Some("metrics.gpu"),
            Precondition::Revision(vec![5])
        )
        .expect("drop"),
        WriteOutcome::Updated(6)
    );
    assert_eq!(effective(&db, "orin-1")["metrics"]["gpu"], false);
    assert!(matches!(
        db.drop_override("orin-1", Some("metrics.gpu"), Precondition::None)
            .expect("drop"),
        WriteOutcome::Missing(_)
    ));
    // Deleting a group takes it off its members.
    assert_eq!(
        db.delete_group("lab", Precondition::None)
            .expect("delete")
            .0,
        WriteOutcome::Deleted(2)
    );
    assert_eq!(effective(&db, "orin-1")["interval"], 30);
    assert!(db.get("orin-1").expect("entry").assigned.is_empty());
    let layers: Vec<String> = db
        .history("orin-1", 100)
        .expect("history")
        .into_iter()
        .filter_map(|r| r.layer)
        .collect();
    assert_eq!(
        layers,
        [
            "device",
            "groups",
            "device",
            "group:jetsons",
            "membership",
            "device",
            "group:lab"
        ]
    );
    drop(db);
    // Everything comes back after a restart.
    let db = Db::open(&path).expect("reopen");
    let entry = db.get("orin-1").expect("entry");
    assert_eq!(
        (entry.revision, entry.groups.clone()),
        (7, vec!["jetsons".to_owned()])
    );
    assert_eq!(db.group("jetsons").expect("group").revision, 2);
    assert_eq!(db.group_history("lab", 10).expect("history").len(), 2);
}

#[test]
fn history_keeps_the_newest_revisions_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("configs.db");
    let db = Db::open_keeping(&path, 5).expect("open");
    for i in 0..12 {
        db.put(
            "orin-1",
            &json!({"device_type": "jetson_orin", "interval": i + 1}),
            "jetson_orin",
            Precondition::None,
        )
        .expect("put");
        db.put_group(
            "lab",
            doc(json!({"interval": i + 1})),
            None,
            Precondition::None,
        )
        .expect("group");
    }
    let history = db.history("orin-1", 1000).expect("history");
    assert_eq!(history.len(), 5, "{history:?}");
    let newest = db.get("orin-1").expect("entry").revision;
    // Oldest first.
    assert_eq!(history[4].revision, newest);
    assert_eq!(history[0].revision, newest - 4);
    assert_eq!(db.group_history("lab", 1000).expect("history").len(), 5);
    drop(db);
    // A smaller limit applies at once when the database opens.
    let db = Db::open_keeping(&path, 2).expect("reopen");
    assert_eq!(db.history("orin-1", 1000).expect("history").len(), 2);
    assert_eq!(db.group_history("lab", 1000).expect("history").len(), 2);
}

#[test]
fn rules_that_stop_matching_give_the_leavers_a_revision_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("configs.db")).expect("open");
    let file = json!({"device_type": "jetson_orin", "interval": 15});
    db.put("orin-1", &file, "jetson_orin", Precondition::None)
        .expect("put");
    let rules = |p: &str| Some(Rules::parse(&json!({"device_type": p})).expect("rules"));
    let (_, members) = db
        .put_group(
            "slow",
            doc(json!({"interval": 60})),
            rules("jetson_*"),
            Precondition::None,
        )
        .expect("group");
    assert_eq!(members, 1);
    assert_eq!(effective(&db, "orin-1")["interval"], 60);
    let before = db.get("orin-1").expect("entry").revision;
    let (_, members) = db
        .put_group(
            "slow",
            doc(json!({"interval": 60})),
            rules("raspberry_*"),
            Precondition::None,
        )
        .expect("group");
    assert_eq!(members, 0, "no member left");
    let entry = db.get("orin-1").expect("entry");
    assert_eq!(entry.revision, before + 1, "the leaver's config changed");
    assert!(entry.groups.is_empty());
    assert_eq!(effective(&db, "orin-1")["interval"], 15);
}

#[test]
fn a_database_from_before_groups_keeps_its_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("configs.db");
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE devices (device_id TEXT PRIMARY KEY, revision INTEGER NOT NULL,
                 config TEXT NOT NULL, device_type TEXT, updated_at REAL NOT NULL, last_contact REAL);
             CREATE TABLE history (device_id TEXT NOT NULL, revision INTEGER NOT NULL,
                 config TEXT, updated_at REAL NOT NULL, PRIMARY KEY (device_id, revision));
             INSERT INTO devices VALUES ('old-1', 3, '{\"device_type\":\"linux\",\"interval\":15}', 'linux', 1.0, NULL);
             INSERT INTO history VALUES ('old-1', 3, '{\"device_type\":\"linux\",\"interval\":15}', 1.0);",
        )
        .expect("old schema");
    }
    let db = Db::open(&path).expect("migrate");
    assert_eq!(db.get("old-1").expect("entry").revision, 3);
    // Its old config is its base: a group it joins wins over it.
    db.put_group(
        "slow",
        doc(json!({"interval": 60})),
        None,
        Precondition::None,
    )
    .expect("group");
    db.set_groups(
        "old-1",
        vec!["slow".into()],
        Precondition::Revision(vec![3]),
    )
    .expect("assign");
    assert_eq!(effective(&db, "old-1")["interval"], 60);
    assert_eq!(
        db.history("old-1", 10).expect("history")[0]
            .layer
            .as_deref(),
        Some("device")
    );
}
