//! `USURP_DEBUG=asyncpreemptoff=1` applies to the first runtime a process
//! builds: the builder asks whether asynchronous preemption is off before
//! the preemption engine's `init` runs, and the variable used to be read
//! only by `init` (so the first runtime stayed preemptible). One test per
//! binary: it sets the variable before anything in the process reads it.

use usurp::Runtime;

#[test]
fn asyncpreemptoff_applies_to_the_first_runtime_of_a_process() {
    std::env::set_var("USURP_DEBUG", "asyncpreemptoff=1");
    let rt = Runtime::builder().workers(1).build().expect("runtime");
    assert!(!rt.async_preemption(), "the first runtime ignored USURP_DEBUG=asyncpreemptoff=1");
    // An explicit choice still wins over the variable.
    drop(rt);
    let rt = Runtime::builder().workers(1).async_preemption(true).build().expect("runtime");
    assert!(rt.async_preemption());
}
