//! A deploy whose workers exit before they are ready (status 3) is rolled back: generation 1 keeps
//! serving under load without a failed request, and a later fixed deploy reloads fine.

mod support;

#[test]
fn new_generation_exits_before_ready_keeps_old() {
    support::scenarios::failed_reload_keeps_old_generation(
        "new_generation_exits_before_ready_keeps_old",
        "--exit-before-ready 3",
        &["status 3"],
    );
}
