//! The `shipsec` binary's modules, beside the library they drive: status lines that
//! never panic ([`console`]), `shipsec run` and `resume` ([`run`]), `serve`, `worker`
//! ([`work`]), `inspect`, and the static run report ([`report`]).

#[macro_use]
pub(crate) mod console;

pub(crate) mod inspect;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod work;
