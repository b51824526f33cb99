//! gobalancer's load generator and test backends.
//!
//! `loadgen serve` runs the scriptable test backend of the core crate
//! ([`gobalancer::testbackend`]) on a range of loopback or LAN ports, the same backend
//! the tests, the simulation and the built-in demo use.

pub mod serve;
