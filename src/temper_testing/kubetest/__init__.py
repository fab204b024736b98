"""Test tooling for the control-plane tier: a real etcd and kube-apiserver on 127.0.0.1, and a
fault-injecting proxy in front of them. Nothing in the product imports it."""
