//! What keeps the engine within bounds: the [`slots`] book (concurrency caps, granted
//! first come, first served), what each node [`needs`] from it, [`rate`] limits as token buckets, and the engine
//! [`config`]uration with its validation, what `shipsec serve` lets its clients do
//! ([`service`]), the one [`gate`] a definition passes before it runs here, with the [`connections`] its listeners let peers hold.

pub mod config;
pub mod connections;
pub mod gate;
pub mod needs;
pub mod rate;
pub mod service;
pub mod slots;
