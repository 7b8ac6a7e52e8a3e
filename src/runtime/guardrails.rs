//! What keeps the engine within bounds: the [`slots`] book (concurrency caps, granted
//! first come, first served), what each node [`needs`] from it, [`rate`] limits as token buckets, and the engine
//! [`config`]uration with its validation, and what `shipsec serve` lets its clients do
//! ([`service`]), with the [`connections`] its listeners let peers hold.

pub mod config;
pub mod connections;
pub mod needs;
pub mod rate;
pub mod service;
pub mod slots;
