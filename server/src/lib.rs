//! The cloud server: election, directory and services as state machines, and the thread
//! shell that drives them with sockets and clocks.

pub mod directory;
pub mod election;
pub mod failure;
pub mod keys;
pub mod load;
pub mod node;
pub mod ops;
pub mod pool;
pub mod runtime;
pub mod services;
pub mod stash;
pub mod store;
pub mod votes;
