#!/usr/bin/env python3
"""The deployment files, checked without a cluster: the compose file and the Kubernetes
manifests parse, keep each node's data on a volume of its own, publish client ports on loopback
only, probe grpc.health.v1 on the control port, and pass kvd only flags it has. The StatefulSet's
start script runs for real (with a stand-in kvd that prints its arguments) to check the node id
it derives from the pod name and that only pods beyond the first three join.

    manifests_test.py SOURCE_DIR KVD_BINARY
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

SOURCE, KVD = sys.argv[1], sys.argv[2]
del sys.argv[1:3]


def load(path):
    with open(os.path.join(SOURCE, path)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kvd_flags():
    help_text = subprocess.run([KVD, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


class Compose(unittest.TestCase):
    def setUp(self):
        (self.compose,) = load("deploy/docker-compose.yml")
        self.kvds = {n: s for n, s in self.compose["services"].items() if n.startswith("kvd")}

    def test_every_node_keeps_its_data_on_a_named_volume(self):
        self.assertEqual(len(self.kvds), 3)
        for name, service in self.kvds.items():
            mounts = [v for v in service["volumes"] if v.endswith(":/var/lib/kvd")]
            self.assertEqual(mounts, [f"{name}-data:/var/lib/kvd"], name)
            self.assertIn(f"{name}-data", self.compose["volumes"])

    def test_ports_are_published_on_loopback_only(self):
        for name, service in self.compose["services"].items():
            for port in service.get("ports", []):
                self.assertTrue(port.startswith("127.0.0.1:"), f"{name}: {port}")

    def test_nodes_are_health_checked_through_grpc_health(self):
        for name, service in self.kvds.items():
            test = service["healthcheck"]["test"]
            self.assertEqual(test[:2], ["CMD", "kvctl"], name)
            self.assertIn("--probe=ready", test)
            self.assertIn("--control-endpoints=127.0.0.1:7101", test)

    def test_prometheus_is_built_from_debian(self):
        prometheus = self.compose["services"]["prometheus"]
        self.assertEqual(prometheus["build"]["context"], "prometheus")
        with open(os.path.join(SOURCE, "deploy/prometheus/Dockerfile")) as f:
            self.assertIn("apt-get install", f.read())

    def test_kvd_knows_every_flag(self):
        flags = kvd_flags()
        for name, service in self.kvds.items():
            for arg in service["command"]:
                self.assertIn(arg.split("=")[0], flags, name)


class Kubernetes(unittest.TestCase):
    def setUp(self):
        docs = load("deploy/kubernetes/kvstore.yaml")
        self.by_kind = {}
        for d in docs:
            self.by_kind.setdefault(d["kind"], []).append(d)
        (self.sts,) = self.by_kind["StatefulSet"]
        (self.container,) = self.sts["spec"]["template"]["spec"]["containers"]

    def test_headless_service_names_every_pod(self):
        headless = [s for s in self.by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
        self.assertEqual(len(headless), 1)
        self.assertEqual(headless[0]["metadata"]["name"], self.sts["spec"]["serviceName"])
        self.assertTrue(headless[0]["spec"]["publishNotReadyAddresses"])

    def test_probes_use_grpc_health_on_the_control_port(self):
        self.assertEqual(self.container["livenessProbe"]["grpc"], {"port": 7101})
        self.assertEqual(self.container["readinessProbe"]["grpc"], {"port": 7101, "service": "kv"})

    def test_data_on_a_persistent_volume_claim(self):
        (claim,) = self.sts["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        self.assertEqual(mounts[claim["metadata"]["name"]], "/var/lib/kvd")
        self.assertEqual(self.sts["spec"]["podManagementPolicy"], "Parallel")

    def test_disruption_budget_keeps_a_quorum(self):
        (pdb,) = self.by_kind["PodDisruptionBudget"]
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        self.assertEqual(pdb["spec"]["selector"], self.sts["spec"]["selector"])

    def run_start_script(self, hostname):
        with tempfile.TemporaryDirectory() as tmp:
            stand_in = os.path.join(tmp, "kvd")
            with open(stand_in, "w") as f:
                f.write('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
            os.chmod(stand_in, 0o755)
            env = {"PATH": f"{tmp}:/usr/bin:/bin", "HOSTNAME": hostname}
            out = subprocess.run(self.container["command"] + self.container["args"], env=env,
                                 capture_output=True, text=True, check=True).stdout
            return out.split()

    def test_node_ids_follow_pod_ordinals_and_only_new_pods_join(self):
        first = self.run_start_script("kvd-0")
        self.assertIn("--node-id=1", first)
        self.assertIn("--advertise-client-address=kvd-0.kvd:7001", first)
        self.assertNotIn("--join", first)
        self.assertIn("--node-id=3", self.run_start_script("kvd-2"))
        fourth = self.run_start_script("kvd-3")
        self.assertIn("--node-id=4", fourth)
        self.assertIn("--join", fourth)
        flags = kvd_flags()
        for arg in fourth:
            self.assertIn(arg.split("=")[0], flags)


if __name__ == "__main__":
    unittest.main(verbosity=2)
