//! Web pages served by the client-side binaries, with no async runtime: a bounded HTTP/1.1
//! parser ([`http`]), a small token-guarded server on `std::net::TcpListener` ([`server`]), and
//! the pages themselves — the cluster dashboard ([`dashboard`], `status --web`) and a signed-in
//! user's own page ([`user`], `client --web`).

pub mod dashboard;
pub mod http;
pub mod server;
pub mod user;
