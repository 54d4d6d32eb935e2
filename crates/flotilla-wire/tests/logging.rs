//! A refused peer is logged, at warn level, with the node id it claimed.

use flotilla_raft::types::NodeId;
use flotilla_wire::handshake::{HandshakeConfig, client_handshake, server_handshake};

/// A minimal tracing subscriber that keeps every event's level and fields as text.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={:?}", field.name(), value));
            }
        }
        let mut fields = Fields(event.metadata().level().to_string());
        event.record(&mut fields);
        self.0.lock().expect("not poisoned").push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_peer_is_logged_at_warn_with_the_id_it_claimed() {
    let captured = Captured::default();
    // Global, and alone in this binary: tracing caches per call site whether anyone listens,
    // so a thread-local subscriber next to other tests' threads would be racy.
    tracing::subscriber::set_global_default(captured.clone()).expect("first subscriber");
    let (mut a, mut b) = tokio::io::duplex(4096);
    let client_cfg = HandshakeConfig::new("cluster-a", NodeId(9)).with_secret("k");
    let server_cfg =
        HandshakeConfig::new("cluster-a", NodeId(2)).with_secret("k").accept_only([NodeId(1)]);
    let (c, s) = tokio::join!(
        client_handshake(&mut a, &client_cfg, NodeId(2)),
        server_handshake(&mut b, &server_cfg)
    );
    assert!(c.is_err() && s.is_err());
    let lines = captured.0.lock().expect("not poisoned").clone();
    let warn = lines.iter().find(|l| l.starts_with("WARN"));
    let warn = warn.unwrap_or_else(|| panic!("no warning among {lines:?}"));
    assert!(warn.contains("claimed_peer=Some(NodeId(9))"), "{warn}");
    assert!(warn.contains("unknown peer node id 9"), "{warn}");
}
