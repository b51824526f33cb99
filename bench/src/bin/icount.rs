//! The instruction-count harness: runs one workload of [`gobalancer_bench::workloads`] a
//! given number of times, so that `scripts/perf-gate.sh` can count its instructions
//! under `valgrind --tool=cachegrind`.
//!
//! `icount list` prints the workloads with their iteration counts; `icount run NAME N`
//! sets NAME up and runs N iterations. The gate runs each workload twice, with N and 2N
//! iterations, and takes the difference divided by N: set-up, process start and exit
//! cancel out, which leaves the instructions of N iterations, exactly. Nothing else is
//! printed, and nothing here reads a clock or the OS's entropy.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workloads = gobalancer_bench::workloads();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["list"] => {
            for w in &workloads {
                println!("{}\t{}", w.name, w.icount_iters);
            }
            ExitCode::SUCCESS
        }
        ["run", name, iters] => {
            let Ok(iters) = iters.parse::<u64>() else {
                eprintln!("icount: {iters:?} is not a number of iterations");
                return ExitCode::from(2);
            };
            let Some(w) = workloads.iter().find(|w| w.name == *name) else {
                eprintln!("icount: no workload {name:?}; `icount list` names them");
                return ExitCode::from(2);
            };
            let mut iteration = (w.setup)();
            let mut acc = 0u64;
            for _ in 0..iters {
                acc = acc.wrapping_add(std::hint::black_box(iteration()));
            }
            std::hint::black_box(acc);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: icount list | icount run NAME ITERATIONS");
            ExitCode::from(2)
        }
    }
}
