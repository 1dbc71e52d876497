//! brine-syndic
