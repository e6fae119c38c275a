//! plexserve-profiler (under construction).
