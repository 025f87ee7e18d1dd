//! Times probe rounds: `cargo run --release --example probe_round -- CONFIG N`.
//! Runs the config's `[[health.check]]` probes N times, one round after the
//! other, and prints the p50, p99 and max of a whole round in milliseconds.
//! Used by bench/probe-round.sh.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: probe_round CONFIG ROUNDS");
    };
    let n: usize = n.parse()?;
    let cfg = sip_ha::config::load(std::path::Path::new(&path))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut times = Vec::with_capacity(n);
    let mut failed = 0usize;
    rt.block_on(async {
        for _ in 0..n {
            let t = Instant::now();
            let results = sip_ha::probe::run_checks(&cfg.health.checks).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if results.iter().any(|r| !r.ok) {
                failed += 1;
            }
        }
    });
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "rounds={n} checks={} failed_rounds={failed} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        cfg.health.checks.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
