//! Integration tests: each starts the real `drainport` binary, talks real TCP
//! on loopback and sends real signals.

mod activation;
mod addresses;
mod claims;
mod closes;
mod console_session;
mod delay;
mod drain;
mod errors;
mod help;
mod hostile;
mod http;
mod http_timeouts;
mod install;
mod kernel;
mod limits;
mod lines;
mod log_time;
mod nc;
mod netns;
mod ops;
mod pidfile;
mod rolling;
mod rolling_trust;
mod runner;
mod sandbox;
mod startup;
mod stats;
mod steer;
mod takeover;
mod telnet;
mod timeouts;
mod unix;
mod util;
