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
