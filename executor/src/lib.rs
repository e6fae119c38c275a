//! plexserve-executor (under construction).
