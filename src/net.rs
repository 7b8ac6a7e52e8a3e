//! What the server's two ports share: connections under a cap and timeouts ([`guard`]),
//! bearer tokens read and compared one way ([`bearer`]), and the open-file limit the caps
//! fit under ([`descriptors`]). The HTTP API (`service`) and the worker port
//! (`worker::gateway`) both build on it; it knows neither.

pub mod bearer;
pub mod descriptors;
pub mod guard;
