//! brine-loadtest
