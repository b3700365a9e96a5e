//! Runs one connection through the operations the fuzzer's bytes decode to
//! (peer sends at any split point, readiness events in any order, partial
//! reads, half-close, reset, interrupted calls, drain notice, hard stop,
//! and timers on a virtual clock: idle, send and the protocol's deadline)
//! and panics on the first broken invariant. See `drainport::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| drainport::fuzzing::run(data));
