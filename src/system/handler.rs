//! The REST surface of `/openidm/system` (to be written).
