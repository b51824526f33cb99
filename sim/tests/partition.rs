//! A backend partitioned away from the balancer mid-run stops receiving traffic, and the
//! clients keep being served by the others.

use gobalancer::io::Env;
use gobalancer::testbackend::Reply;
use gobalancer_sim::{world, SimEnv};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

const SEEDS: [u64; 3] = [1, 2, 3];
const PARTITION_AT: Duration = Duration::from_secs(5);
const RUN_FOR: Duration = Duration::from_secs(15);

#[derive(Debug)]
struct Record {
    started: Duration,
    result: Result<String, String>,
}

#[test]
fn partitioned_backend_stops_receiving_and_clients_are_served() {
    for seed in SEEDS {
        println!("simulation seed {seed}");
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .simulation_duration(Duration::from_secs(60))
            .build();
        let backends = world::backends(&mut sim, seed, 3, 9000, Reply::Name);
        world::balancer(
            &mut sim,
            seed,
            "lb",
            &world::simple_config(8080, "round-robin", &backends),
        );
        let lb = SocketAddr::new(sim.lookup("lb"), 8080);
        let records: Rc<RefCell<Vec<Record>>> = Rc::default();
        for c in 0..3 {
            let host = format!("client-{c}");
            let records = records.clone();
            sim.client(host.clone(), async move {
                let env = SimEnv::new(seed, &host);
                // The client's clock starts with the simulation.
                while env.now().since_origin() < RUN_FOR {
                    let started = env.now().since_origin();
                    let result = world::fetch_line(&env, lb, Duration::from_secs(10))
                        .await
                        .map_err(|e| e.to_string());
                    records.borrow_mut().push(Record { started, result });
                    env.sleep(Duration::from_millis(10 + env.random_u64() % 40)).await;
                }
                Ok(())
            });
        }
        let mut partitioned = false;
        loop {
            if !partitioned && sim.elapsed() >= PARTITION_AT {
                sim.partition("lb", "backend-2");
                partitioned = true;
            }
            match sim.step() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => panic!("seed {seed}: simulation failed: {e}"),
            }
        }
        assert!(partitioned);
        let records = records.borrow();
        // A connection that started at the partition instant may have been mid-flight.
        let after: Vec<&Record> = records
            .iter()
            .filter(|r| r.started > PARTITION_AT + Duration::from_millis(1))
            .collect();
        let before: Vec<&Record> = records.iter().filter(|r| r.started < PARTITION_AT).collect();
        assert!(
            after.len() > 100,
            "seed {seed}: enough traffic after the partition: {}",
            after.len()
        );
        for r in &after {
            match &r.result {
                Ok(name) => assert_ne!(
                    name, "backend-2",
                    "seed {seed}: no traffic to the partitioned backend: {r:?}"
                ),
                Err(e) => panic!("seed {seed}: a client was not served after the partition: {r:?} ({e})"),
            }
        }
        let served = |name: &str| after.iter().filter(|r| r.result.as_deref() == Ok(name)).count();
        assert!(
            served("backend-1") > 40 && served("backend-3") > 40,
            "seed {seed}: the others share the load"
        );
        assert!(
            before.iter().any(|r| r.result.as_deref() == Ok("backend-2")),
            "seed {seed}: backend-2 served before the partition"
        );
    }
}
