//! The actor-level suite over the in-process broker.

mod suite;

use std::sync::Arc;

use dbaas::broker::inproc::InProcBroker;
use suite::actors;

fn broker() -> Arc<InProcBroker> {
    Arc::new(InProcBroker::new())
}

macro_rules! inproc {
    ($($name:ident),* $(,)?) => {$(
        #[actix::test]
        async fn $name() {
            actors::$name(broker()).await;
        }
    )*};
}

actors::every_script!(inproc);
