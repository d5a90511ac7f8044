//! A deploy whose workers serve but never send READY=1 is rolled back after --ready-timeout: generation 1
//! keeps serving under load without a failed request, and a later fixed deploy reloads fine.

mod support;

#[test]
fn new_generation_never_ready_keeps_old() {
    support::scenarios::failed_reload_keeps_old_generation(
        "new_generation_never_ready_keeps_old",
        "--never-ready",
        &["not ready"],
    );
}
