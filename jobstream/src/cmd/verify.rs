//! `jobstream verify`: fold the stream afresh in memory and compare it with the projection.
//! Exit status 0 when they agree; otherwise non-zero with the differing jobs and fields.

use jobstream_projector::replay;

use crate::cli::VerifyArgs;
use crate::system;

/// Runs the comparison and prints its report.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let broker = system::connect_broker(&args.nats, "jobstream-verify").await?;
    let db = system::connect_db_migrated(&args.db.url()).await?;
    let report = replay::verify(
        &broker,
        &db,
        jobstream_core::replay::DEFAULT_PROJECTOR,
        args.job_ttl,
    )
    .await?;
    println!(
        "compared {} projected jobs with a fresh fold of {} jobs up to stream sequence {} ({} swept past the TTL, {} beyond the stream's retention)",
        report.projected, report.folded, report.checkpoint, report.swept, report.beyond_retention
    );
    if !report.rejected.is_empty() {
        // Not a difference: the projection cannot hold these events, and says so.
        println!(
            "{} event(s) rejected by the projection (dead letters; {} job(s) not compared):",
            report.rejected.len(),
            report.rejected_jobs
        );
        for r in &report.rejected {
            println!(
                "    seq {} {} job {} ({}): {}",
                r.seq,
                r.subject,
                r.job_id.as_deref().unwrap_or("-"),
                r.event_type.as_deref().unwrap_or("-"),
                r.error
            );
        }
    }
    if report.is_clean() {
        println!("OK: the projection equals a fresh fold of the stream");
        return Ok(());
    }
    for d in &report.differences {
        // A job row by its id; workflow and count rows name themselves.
        if uuid::Uuid::parse_str(&d.job_id).is_ok() {
            println!("job {}:", d.job_id);
        } else {
            println!("{}:", d.job_id);
        }
        for f in &d.fields {
            println!("    {f}");
        }
    }
    anyhow::bail!(
        "{} row(s) differ from a fresh fold of the stream (run `jobstream replay` to rebuild)",
        report.differences.len()
    )
}
