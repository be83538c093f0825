//! The core's Store contract suite, against a file, a file mirrored in
//! memory, and in memory.

mod file {
    qdn_relay_core::store_contract_tests!(async { crate::common::FileStore::fresh().await });
}

mod file_without_readers {
    // Reads share the writer connection.
    qdn_relay_core::store_contract_tests!(async {
        crate::common::FileStore::fresh_with(qdn_relay_sqlite::SqliteOptions::default().readers(0))
            .await
    });
}

mod memory {
    qdn_relay_core::store_contract_tests!(async {
        qdn_relay_sqlite::SqliteStore::open_in_memory()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    });
}

mod mirrored {
    qdn_relay_core::store_contract_tests!(async { crate::common::FileStore::mirrored().await });
}

/// A dispatch with 10,000 texts keeps a small record and loses nothing, on
/// a shared file and on a mirrored one (which is then reopened: the moved
/// texts' lookups come back from the file).
mod ten_thousand_texts {
    use qdn_relay_core::Store;
    use qdn_relay_core::testing::contract::many_texts;

    #[tokio::test]
    async fn on_a_file() {
        let store = crate::common::FileStore::fresh().await;
        many_texts(&store, 10_000, 10).await;
    }

    #[tokio::test]
    async fn mirrored_and_reopened() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("relay.db");
        let store = qdn_relay_sqlite::MirroredStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        many_texts(&store, 10_000, 10).await;
        drop(store);
        let again = qdn_relay_sqlite::MirroredStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let sid = "SMin2".parse().unwrap_or_else(|e| panic!("{e}"));
        let found = again
            .by_inbound_sid(&sid)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(found.is_some(), "a moved text's lookup is loaded again");
        let sid = "SMleg0".parse().unwrap_or_else(|e| panic!("{e}"));
        let found = again
            .by_leg_sid(&sid)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(found.is_some(), "a moved leg's lookup is loaded again");
        let d = found.unwrap_or_else(|| unreachable!());
        let pages = again
            .history(d.id())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pages.len(), d.history().pages as usize);
    }
}
