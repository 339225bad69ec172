//! `jobstream replay`: rebuild the projection from the stream, with progress on stderr.
//!
//! Into the live database (a shadow beside it, then an atomic swap carrying the
//! checkpoint) or `--into` another database. Ctrl-C stops after the current batch;
//! running the same command again resumes.

use std::sync::Arc;
use std::time::Duration;

use jobstream_projector::replay::control::Lease;
use jobstream_projector::replay::{self, Progress, ReplayOptions, ReplayStart, ReplaySummary};

use crate::cli::ReplayArgs;
use crate::system;

/// Runs the replay and prints its summary.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let broker = system::connect_broker(&args.nats, "jobstream-replay").await?;
    let start = match (args.from_seq, args.since) {
        (Some(0), _) => anyhow::bail!("--from-seq must be at least 1"),
        (Some(s), _) => ReplayStart::Seq(s),
        (None, Some(t)) => ReplayStart::Since(t),
        (None, None) => ReplayStart::Beginning,
    };
    let opts = ReplayOptions {
        start,
        job_ttl: args.job_ttl,
        batch_size: args.batch_size.max(1),
        fresh: args.fresh,
        ..ReplayOptions::default()
    };
    let cancel = jobstream_core::shutdown::token_on_signal();
    let progress = Arc::new(Progress::default());
    let reporter = tokio::spawn(report(progress.clone()));
    let result = match &args.into {
        Some(url) => {
            eprintln!("replaying into {}", system::redact(url));
            let db = system::connect_db_migrated(url).await?;
            replay::replay_into(&broker, &db, &opts, &progress, &cancel).await
        }
        None => {
            eprintln!(
                "replaying into the live database {} (shadow, then atomic swap)",
                system::redact(&args.db.url())
            );
            let db = system::connect_db_migrated(&args.db.url()).await?;
            // The lock of replays asked for over the API too: never two at once.
            let lease = match Lease::acquire(&broker, &opts.projector_name, &progress.snapshot())
                .await?
            {
                Ok(lease) => lease,
                Err(held) => anyhow::bail!(
                    "a replay is already running ({} at sequence {} of {}); see GET /v1/admin/replay",
                    held.phase,
                    held.position,
                    held.target
                ),
            };
            let replay = replay::replay_live(&broker, &db, &opts, &progress, &cancel);
            lease.publish_while(&progress, replay).await
        }
    };
    reporter.abort();
    eprintln!();
    let summary = result?;
    print_summary(&summary);
    if summary.interrupted {
        anyhow::bail!(
            "replay interrupted at sequence {}; run the same command again to resume",
            summary.checkpoint
        );
    }
    Ok(())
}

/// One progress line per second on stderr: position, events/s, ETA.
async fn report(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let s = progress.snapshot();
        let pct = if s.target > 0 {
            100.0 * s.position as f64 / s.target as f64
        } else {
            0.0
        };
        let eta = s
            .eta_secs
            .map_or_else(|| "?".to_owned(), |e| format!("{e:.0}s"));
        eprint!(
            "\r{:<10} seq {}/{} ({pct:.1}%)  {:.0} events/s  ETA {eta}      ",
            s.phase, s.position, s.target, s.events_per_sec
        );
    }
}

fn print_summary(s: &ReplaySummary) {
    eprintln!(
        "replay {}: {} events read from seq {} in {:.1}s ({} applied, {} ignored, {} undecodable, {} rejected), {} finished jobs past the TTL left out, {} jobs, checkpoint {}{}",
        if s.interrupted { "interrupted" } else { "done" },
        s.events,
        s.from_seq,
        s.elapsed_secs,
        s.applied,
        s.ignored,
        s.undecodable,
        s.rejected,
        s.swept,
        s.jobs,
        s.checkpoint,
        if s.resumed { " (resumed)" } else { "" },
    );
}
