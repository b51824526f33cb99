//! Backend selection algorithms (API contract; implementation in progress).
