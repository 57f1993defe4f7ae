//! Network exposure: listening sockets, their owning processes, and how exposed they are.
