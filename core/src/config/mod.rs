//! Configuration (API contract; implementation in progress).
