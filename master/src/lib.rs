//! brine-master
