//! brine-minion
