//! The DBaaS embedded in a program: a master and two slaves over the
//! in-process broker, one write and one read, then a clean stop.
//!
//! `cargo run --example quickstart`

use std::sync::Arc;

use dbaas::broker::inproc::InProcBroker;
use dbaas::model::{Consistency, ReadOp, Value, WriteOp};
use dbaas::system::Cluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("dbaas-quickstart-{}", std::process::id()));
    actix::System::new().block_on(async {
        let cluster = Cluster::start(&dir, 2, Arc::new(InProcBroker::new())).await?;
        let row = [
            ("username".to_owned(), Value::from("alice")),
            ("password".to_owned(), Value::from("ab".repeat(20))),
        ]
        .into();
        let write = cluster
            .orchestrator
            .write(WriteOp::Insert {
                table: "users".into(),
                row,
            })
            .await?;
        println!("write acknowledged as seq {}", write.seq);
        let get = ReadOp::Get {
            table: "users".into(),
            key: Value::from("alice"),
            columns: Some(vec!["username".into()]),
        };
        let read = cluster.orchestrator.read(get, Consistency::Strong).await?;
        println!("read at seq {}: {:?}", read.seq, read.result);
        cluster.stop().await;
        Ok::<_, dbaas::error::Error>(())
    })?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
