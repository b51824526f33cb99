//! `gobalancer-sim`: runs scenario files on the simulated network.
//!
//! ```text
//! gobalancer-sim run FILE [--seed N | --seeds A..B] [--trace FILE] [--svg FILE] [--brief]
//! gobalancer-sim shrink FILE --seed N [--out FILE]
//! gobalancer-sim check FILE
//! ```
//!
//! Exit status: 0 when every seed passed, 1 when any seed broke an invariant or an
//! expectation, 2 when the scenario or the command line is wrong (nothing ran).

use clap::{Parser, Subcommand};
use gobalancer_sim::scenario::{self, Prepared};
use gobalancer_sim::{log, oracle, report, runner, shrink};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gobalancer-sim",
    about = "Deterministic simulation of gobalancer: scenarios, invariants, replay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario on one seed, a range of seeds, or the seeds the file lists.
    Run {
        /// The scenario file (RON).
        file: String,
        /// One seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Seeds A..B (B excluded) or A..=B.
        #[arg(long)]
        seeds: Option<String>,
        /// Write the event trace here (with several seeds, `-SEED` goes before the
        /// extension).
        #[arg(long)]
        trace: Option<String>,
        /// Draw the timeline here as SVG (same naming as --trace).
        #[arg(long)]
        svg: Option<String>,
        /// One line per seed instead of the full report.
        #[arg(long)]
        brief: bool,
    },
    /// Shrinks a failing seed's fault list and request mix; writes the smallest failing
    /// scenario as RON.
    Shrink {
        /// The scenario file (RON).
        file: String,
        /// The failing seed (kept fixed).
        #[arg(long)]
        seed: u64,
        /// Where to write it; default scenarios/regressions/NAME-seedN.ron.
        #[arg(long)]
        out: Option<String>,
    },
    /// Checks a scenario file without running it.
    Check {
        /// The scenario file (RON).
        file: String,
    },
}

/// Parses `A..B` or `A..=B`.
fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds {s}: expected A..B or A..=B");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let b = if inclusive {
        b.checked_add(1).ok_or_else(bad)?
    } else {
        b
    };
    if a >= b {
        return Err(format!("--seeds {s}: the range is empty"));
    }
    if b - a > 1_000_000 {
        return Err(format!("--seeds {s}: at most 1000000 seeds per run"));
    }
    Ok((a..b).collect())
}

/// `path` with `-SEED` before its extension, when several seeds run.
fn per_seed(path: &str, seed: u64, several: bool) -> String {
    if !several {
        return path.to_string();
    }
    match path.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.contains('/') => format!("{stem}-{seed}.{ext}"),
        _ => format!("{path}-{seed}"),
    }
}

fn write(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{path}: cannot write: {e}"))
}

fn load(file: &str) -> Result<Prepared, ExitCode> {
    scenario::load(file).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn run(file: &str, seeds: Vec<u64>, trace: Option<&str>, svg: Option<&str>, brief: bool) -> ExitCode {
    let p = match load(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let seeds = if seeds.is_empty() {
        p.scenario.seeds.clone()
    } else {
        seeds
    };
    if seeds.is_empty() {
        eprintln!("{file}: no seed given and the scenario lists none; pass --seed N or --seeds A..B");
        return ExitCode::from(2);
    }
    let several = seeds.len() > 1;
    let mut failing = Vec::new();
    for seed in &seeds {
        let seed = *seed;
        if !brief {
            println!("seed {seed}");
        }
        let out = match runner::run(&p, seed) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("{file}: seed {seed}: {e}");
                return ExitCode::from(2);
            }
        };
        let r = oracle::check(&p, &out);
        if brief {
            println!("{}", report::brief(&r));
        } else {
            print!("{}", report::text(&p, &r));
        }
        if let Some(t) = trace {
            let backends: Vec<String> = p.scenario.backends.iter().map(|b| b.name.clone()).collect();
            let text = log::format_trace(&out.log.events, &backends, &p.scenario.clients);
            if let Err(e) = write(&per_seed(t, seed, several), &text) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
        if let Some(s) = svg {
            if let Err(e) = write(&per_seed(s, seed, several), &report::svg(&p, &out)) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
        if !r.violations.is_empty() {
            failing.push(seed);
        }
    }
    if failing.is_empty() {
        if several {
            println!("all {} seeds passed", seeds.len());
        }
        ExitCode::SUCCESS
    } else {
        println!("failing seeds ({} of {}): {failing:?}", failing.len(), seeds.len());
        for s in failing.iter().take(5) {
            println!("  replay: {}", report::replay_command(file, *s));
        }
        ExitCode::from(1)
    }
}

fn shrink_cmd(file: &str, seed: u64, out: Option<&str>) -> ExitCode {
    let p = match load(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    println!("seed {seed}: shrinking {file}");
    let mut progress = |line: &str| println!("  {line}");
    let shrunk = match shrink::shrink(&p, seed, &mut progress) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    let path = out.map_or_else(
        || format!("scenarios/regressions/{}.ron", shrunk.scenario.name),
        str::to_string,
    );
    let text = match shrunk.scenario.to_ron() {
        Ok(t) => format!(
            "// Written by `gobalancer-sim shrink {file} --seed {seed}`.\n// Replay: {}\n{t}\n",
            report::replay_command(&path, seed)
        ),
        Err(e) => {
            eprintln!("cannot write the scenario as RON: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = std::path::Path::new(&path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    if let Err(e) = write(&path, &text) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    println!(
        "{} runs: faults {} -> {}, mix {} -> {}; still failing with:",
        shrunk.runs, shrunk.faults.0, shrunk.faults.1, shrunk.mix.0, shrunk.mix.1
    );
    for v in &shrunk.violations {
        println!("  {v}");
    }
    println!("wrote {path}");
    println!("replay: {}", report::replay_command(&path, seed));
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            file,
            seed,
            seeds,
            trace,
            svg,
            brief,
        } => {
            let seeds = match (seed, seeds) {
                (Some(s), _) => vec![s],
                (None, Some(r)) => match parse_seeds(&r) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                (None, None) => Vec::new(),
            };
            run(&file, seeds, trace.as_deref(), svg.as_deref(), brief)
        }
        Command::Shrink { file, seed, out } => shrink_cmd(&file, seed, out.as_deref()),
        Command::Check { file } => match load(&file) {
            Ok(p) => {
                println!(
                    "{file}: ok ({} backends, {} clients, {} faults, seeds {:?})",
                    p.scenario.backends.len(),
                    p.scenario.clients.len(),
                    p.scenario.timeline.len(),
                    p.scenario.seeds
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("3..6"), Ok(vec![3, 4, 5]));
        assert_eq!(parse_seeds("3..=4"), Ok(vec![3, 4]));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("x..3").is_err());
        assert_eq!(per_seed("out/t.txt", 7, true), "out/t-7.txt");
        assert_eq!(per_seed("t", 7, true), "t-7");
        assert_eq!(per_seed("t.txt", 7, false), "t.txt");
    }
}
