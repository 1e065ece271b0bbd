//! Swarm testing, after TigerBeetle's VOPR: one number draws every option of a run (how
//! many nodes, how long, churn, link breaks, a partition, latencies, delay spikes,
//! restarts with old ids, the messaging workload, real link cryptography for small
//! networks), so that runs cover combinations nobody thought to write down, and any one of
//! them replays from its number alone (`iris-sim --swarm-seed N`).

use crate::{Partition, SimConfig, Workload};
use iris_proto::{NetworkKey, Security};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

/// The network key of runs on secure links (the test fixture: simulations only).
const FIXTURE_KEY: &[u8] = include_bytes!("../../iris-proto/tests/fixtures/net-pkcs8.pem");

/// Most nodes of a run on secure links: each link costs two RSA signatures.
const SECURE_MAX_NODES: usize = 16;

/// The options of swarm run `seed`, drawn from it alone. `max_nodes` caps the network's
/// size (the draw is the same below the cap, so a seed replays at any cap that allows it).
pub fn draw(seed: u64, max_nodes: usize) -> SimConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7377_6172_6d21);
    // Sizes log-uniform from 10 to several thousand: small networks are fast and many.
    let nodes = (10f64 * 400f64.powf(rng.random::<f64>())) as usize;
    let nodes = nodes.clamp(10, max_nodes.max(10));
    let minutes = [0.5, 1.0, 2.0, 3.0][rng.random_range(0..4)];
    let churn = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3][rng.random_range(0..6)];
    let lo = rng.random_range(1..20u64);
    let hi = lo + rng.random_range(0..200u64);
    let link_breaks = if rng.random_bool(0.4) {
        rng.random_range(0.5..6.0)
    } else {
        0.0
    };
    let partition = rng.random_bool(0.25).then(|| Partition {
        start: Duration::from_secs(rng.random_range(5..40)),
        length: Duration::from_secs(rng.random_range(5..40)),
        fraction: rng.random_range(0.1..0.5),
    });
    let spike_rate = if rng.random_bool(0.3) {
        rng.random_range(0.0001..0.01)
    } else {
        0.0
    };
    let spike_delay = Duration::from_millis(rng.random_range(200..5000));
    let restart_same_id = rng.random_range(0.0..0.6);
    let join_spread = Duration::from_secs(rng.random_range(0..30));
    let messaging = rng.random_bool(0.4);
    let secure = nodes <= SECURE_MAX_NODES && rng.random_bool(0.5);
    let run_seed = rng.random::<u64>();
    // Drawn apart, so that the seeds drawn before stalls existed keep their other options.
    let mut stall_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7374_616c_6c73);
    let stalls = if stall_rng.random_bool(0.3) {
        stall_rng.random_range(0.2..3.0)
    } else {
        0.0
    };
    let stall_length = Duration::from_secs(stall_rng.random_range(2..20));
    SimConfig {
        nodes,
        minutes,
        churn,
        seed: run_seed,
        latency: (Duration::from_millis(lo), Duration::from_millis(hi)),
        join_spread,
        link_breaks,
        partition,
        spike_rate,
        spike_delay,
        stalls,
        stall_length,
        restart_same_id,
        security: if secure {
            fixture_key()
        } else {
            Security::Plain
        },
        workload: messaging.then(|| {
            if nodes < 100 {
                Workload::small()
            } else {
                Workload::default()
            }
        }),
        ..SimConfig::default()
    }
}

/// One line saying what a swarm run is, for its report.
pub fn describe(cfg: &SimConfig) -> String {
    format!(
        "{} nodes, {} min, churn {}/min, latency {}-{} ms, joins over {} s, link breaks {:.1}/min, partition {}, spikes {:.4} x {} ms, stalls {:.1}/min x {} s, old ids {:.2}, {}{}",
        cfg.nodes,
        cfg.minutes,
        cfg.churn,
        cfg.latency.0.as_millis(),
        cfg.latency.1.as_millis(),
        cfg.join_spread.as_secs(),
        cfg.link_breaks,
        cfg.partition.map_or("none".to_string(), |p| format!(
            "{}% at {} s for {} s",
            (p.fraction * 100.0) as u32,
            p.start.as_secs(),
            p.length.as_secs()
        )),
        cfg.spike_rate,
        cfg.spike_delay.as_millis(),
        cfg.stalls,
        cfg.stall_length.as_secs(),
        cfg.restart_same_id,
        if cfg.workload.is_some() {
            "messaging"
        } else {
            "overlay only"
        },
        if matches!(cfg.security, Security::Rsa(_)) {
            ", secure links"
        } else {
            ""
        }
    )
}

fn fixture_key() -> Security {
    let key = NetworkKey::from_bytes(FIXTURE_KEY).expect("the fixture key loads");
    Security::Rsa(Arc::new(key))
}
