//! Kubernetes API server stand-in.
