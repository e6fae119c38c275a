//! plexserve-kernels (under construction).
