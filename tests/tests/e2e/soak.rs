//! The soak, short: a few hundred watches and a steady stream of GETs and LISTs for a few
//! seconds; nothing fails, and MCA is back at its open files and tasks once the load stops.
//! `cargo xtask soak` is the full-size run.

use std::time::Duration;

use mca_tests::{harness::Env, soak};

#[tokio::test(flavor = "multi_thread")]
async fn a_short_soak_fails_nothing_and_leaks_nothing() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let report = soak::run(
        &env,
        soak::Settings {
            duration: Duration::from_secs(5),
            watches: 300,
            requests_per_second: 100,
        },
    )
    .await?;
    println!("{}", report.table());
    assert_eq!(report.failures(), 0, "{}", report.table());
    assert!(report.requests >= 300, "{}", report.table());
    assert_eq!(report.after.fds, report.before.fds, "{}", report.table());
    assert_eq!(
        report.after.tasks,
        report.before.tasks,
        "{}",
        report.table()
    );
    Ok(())
}
