#!/usr/bin/env python3
"""Covers the cluster IP end to end in a two-box netns lab, with a LAN client watching ARP for two answering MACs throughout: kill -9 (and the dead box's silence), the address removed behind the active's back, heartbeat link cut, LAN carrier loss with the hardware fault switch on and off, the old active rejoining as standby."""
from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netns_common import (MAC_A, MAC_B, LabTestCase, brief, lab_mod, main, note,  # noqa: E402
                          now_mono_us, poll)

CLUSTER_IP = lab_mod.CLUSTER_IP


def raised(events: list[dict], key: str) -> list[dict]:
    return [e for e in events if e.get("key") == key and e.get("raised")]


class ClusterIpTest(LabTestCase):
    lab_prefix = "c"

    def kill_active_and_see_b(self) -> float:
        """kill -9 of box a's agent; returns the ms from the kill to the client's first ARP
        answer from box b."""
        watch = self.watch
        time.sleep(0.3)
        self.assertEqual(watch.last_mac(), MAC_A, "before the kill the client must reach box a")
        kill_us = now_mono_us()
        self.lab.fail("kill", "a")
        self.wait_status("b", lambda s: s["role"] == "Active", 10, "b Active after the kill")
        t_b = None
        deadline = time.monotonic() + 5
        while t_b is None and time.monotonic() < deadline:
            t_b = watch.first_answer_after(MAC_B, kill_us)
            time.sleep(0.01)
        self.assertIsNotNone(t_b, "the client never got an ARP answer from box b")
        return (t_b - kill_us) / 1000

    def test_kill9_active_client_reaches_standby_mac(self):
        self.up('"50ms"')
        self.start_watch(interval_us=200)
        ms = self.kill_active_and_see_b()
        note(f"kill -9 of the active agent -> first ARP answer from box b ({MAC_B}): {ms:.1f} ms "
             f"(heartbeat_timeout 50 ms, client probing every 200 us)")
        time.sleep(0.5)
        t_mark = now_mono_us()
        time.sleep(0.3)
        # The killed agent's kernel still holds the cluster IP: only its fence keeps it quiet.
        self.assertEqual(self.watch.macs_answering_since(t_mark), {MAC_B})
        self.assertLess(ms, 2000, "takeover far slower than the 50 ms timeout allows")
        # Nor may it speak for the cluster IP: an ARP it sends from that address (what its kernel
        # does on its own, and what phones learn the address's MAC from) must not reach the LAN.
        heard = self.arp_from_cluster_ip_seen_by_phone(
            lambda: self.lab.exec_in("a", "arping", "-U", "-c", "3", "-w", "1", "-I", "lan0",
                                     "-s", CLUSTER_IP, CLUSTER_IP, check=False))
        note(f"ARP from the cluster IP sent by the killed box a, seen by a phone: {heard}")
        self.assertNotIn(MAC_A, heard, "the dead agent's box still speaks for the cluster IP")
        self.assert_no_conflict()

    def arp_from_cluster_ip_seen_by_phone(self, send) -> set[str]:
        """Runs send() while phone2 listens; returns the MACs of ARP frames whose sender IP is
        the cluster IP."""
        vip = socket.inet_aton(CLUSTER_IP)
        s = lab_mod.netns_socket(self.lab.ns("phone2"), socket.AF_PACKET, socket.SOCK_RAW,
                             socket.htons(0x0806))
        s.bind(("eth0", 0x0806))
        s.settimeout(0.05)
        send()
        seen: set[str] = set()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                data = s.recv(256)
            except socket.timeout:
                continue
            if len(data) >= 42 and data[28:32] == vip and struct.unpack("!H", data[12:14])[0] == 0x0806:
                seen.add(data[22:28].hex(":"))
        s.close()
        return seen

    def test_cluster_ip_removed_behind_the_actives_back_is_restored(self):
        self.up('"50ms"')
        self.start_watch(interval_us=500)
        time.sleep(0.2)
        t_del = now_mono_us()
        self.lab.exec_in("a", "ip", "addr", "del", f"{CLUSTER_IP}/24", "dev", "lan0")
        back, _ = poll(lambda: CLUSTER_IP in self.lab.exec_in("a", "ip", "-br", "addr", "show",
                                                               "lan0", capture=True), 5)
        restored_ms = (now_mono_us() - t_del) / 1000
        note(f"cluster IP deleted by hand on the active: back on lan0 after {restored_ms:.1f} ms "
             "(polled)")
        self.assertTrue(back, "the active did not restore its cluster IP")
        self.assertLess(restored_ms, 5000, "the active did not restore its cluster IP")
        ev = raised(self.events("a"), "cluster-ip-removed")
        self.assertTrue(ev, f"no event for the removal: {self.events('a')}")
        self.assert_role("a", "Active", "Dual")
        self.assert_role("b", "Standby", "Dual")
        time.sleep(0.3)
        t_mark = now_mono_us()
        time.sleep(0.3)
        self.assertEqual(self.watch.macs_answering_since(t_mark), {MAC_A})
        self.assert_no_conflict()

    def test_heartbeat_link_cut_alerts_without_promotion(self):
        self.up('"50ms"')
        watch = self.start_watch(interval_us=500)
        time.sleep(0.3)
        t_mark = now_mono_us()
        self.lab.fail("hb-link", "a")
        # 40 timeouts: a promotion would long have happened.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            for box, role in (("a", "Active"), ("b", "Standby")):
                s = self.status(box)
                self.assertIsNotNone(s, f"box {box}: no status")
                self.assertEqual(s["role"], role, f"box {box} changed role: {brief(s)}")
            time.sleep(0.1)
        events = {box: self.events(box) for box in ("a", "b")}
        for box in ("a", "b"):
            link = raised(events[box], "heartbeat-link")
            hung = raised(events[box], "peer-hung")
            note(f"box {box}: {len(events[box])} events; heartbeat-link alerts "
                 f"{[e.get('content') for e in link]}; peer-hung alerts raised {len(hung)}")
            self.assertTrue(link, f"box {box}: no heartbeat-link alert: {events[box][:5]}")
            # Both agents run: over the LAN path the peer must not look hung, and one alert per
            # fault, not a flood (the guide's hysteresis).
            self.assertEqual(len(hung), 0, f"box {box}: healthy peer reported hung {len(hung)} "
                             f"times over the LAN path, e.g. {hung[:2]}")
            self.assertLessEqual(len(events[box]), 4, f"box {box}: event flood: {events[box][:6]}")
        sa, sb = self.status("a"), self.status("b")
        note(f"after 2 s: a {brief(sa)}; b {brief(sb)}")
        self.assertEqual(watch.macs_answering_since(t_mark), {MAC_A},
                         "exactly one box (a) must answer while the heartbeat link is cut")
        self.assertEqual(sa["term"], self.status("a")["term"])
        self.assert_no_conflict()

    def test_lan_link_down_with_hardware_switch_fails_over(self):
        self.up('"50ms"', hw_switch=True)
        watch = self.start_watch(interval_us=200)
        time.sleep(0.3)
        cut_us = now_mono_us()
        self.lab.fail("lan-link", "a")
        sb, dt = self.wait_status("b", lambda s: s["role"] == "Active", 5,
                                  "b Active after a's LAN carrier loss")
        t_b = None
        deadline = time.monotonic() + 5
        while t_b is None and time.monotonic() < deadline:
            t_b = watch.first_answer_after(MAC_B, cut_us)
            time.sleep(0.01)
        self.assertIsNotNone(t_b, "the client never got an ARP answer from box b")
        sa, dta = self.wait_status("a", lambda s: s["role"] != "Active", 5,
                                   "a leaving Active after its LAN carrier loss")
        note(f"LAN carrier loss on a (hardware switch on): b Active after {dt * 1000:.0f} ms "
             f"(polled), first ARP answer from b {(t_b - cut_us) / 1000:.1f} ms after the cut; "
             f"a now {sa['role']}/{sa['state']} ({sa['last_reason']!r})")
        ev = raised(self.events("a"), "hardware-fault")
        note(f"box a hardware-fault alerts: {[e.get('content') for e in ev]}")
        self.assertTrue(ev, f"box a: no hardware-fault alert: {self.events('a')}")
        self.assertLess((t_b - cut_us) / 1000, 3000, "hardware-fault failover far too slow")
        self.assert_no_conflict()

    def test_lan_link_down_without_hardware_switch_alerts_only(self):
        self.up('"50ms"', hw_switch=False)
        watch = self.start_watch(interval_us=500)
        time.sleep(0.3)
        cut_us = now_mono_us()
        self.lab.fail("lan-link", "a")
        end = time.monotonic() + 2
        while time.monotonic() < end:
            for box, role in (("a", "Active"), ("b", "Standby")):
                s = self.status(box)
                self.assertIsNotNone(s, f"box {box}: no status")
                self.assertEqual(s["role"], role, f"box {box} changed role: {brief(s)}")
            time.sleep(0.1)
        ev = raised(self.events("a"), "hardware-fault")
        note(f"box a hardware-fault alerts: {[e.get('content') for e in ev]}")
        self.assertTrue(ev, f"box a: no hardware-fault alert: {self.events('a')}")
        self.assertNotIn(MAC_B, watch.macs_answering_since(cut_us),
                         "box b answered for the cluster IP although a stayed active")
        down = self.probe_once()
        note(f"while a's LAN port is down a second client gets: {down or 'no answer'}")
        self.assertEqual(down, {}, "someone answers for the cluster IP while a's port is down")
        # With the carrier back the client reaches box a again.
        self.lab.fail("lan-link-up", "a")
        time.sleep(0.2)
        back = self.probe_once()
        note(f"after the carrier came back a second client gets: {back}")
        self.assertEqual(set(back), {MAC_A}, "box a does not answer after its carrier came back")
        self.assert_role("a", "Active")
        self.assert_no_conflict()

    def test_old_active_rejoins_as_standby_and_pulls_sync(self):
        self.up('"50ms"')
        self.start_watch(interval_us=500)
        ms = self.kill_active_and_see_b()
        note(f"kill -9 of a -> first ARP answer from b: {ms:.1f} ms")
        # A change made on the new active while a is down: a must pull it when it rejoins.
        changed = self.lab.box_dir("b") / "pbx" / "etc" / "extensions.conf"
        mirrored = self.lab.box_dir("a") / "pbx" / "etc" / "extensions.conf"
        changed.write_text("[2001]\ntype=friend\nsecret=rejoin2001\n")
        time.sleep(0.2)
        t0 = time.monotonic()
        self.lab.start_agent("a")
        sa, dt = self.wait_status("a", lambda s: s["role"] == "Standby" and s["ha_status"] == "Dual",
                                  30, "a Standby/Dual after its restart", 0.01)
        note(f"a back as {sa['role']}/{sa['ha_status']} {dt * 1000:.0f} ms after its restart")
        sb = self.assert_role("b", "Active", "Dual")
        # No preemption: the primary must not take the role back on its own.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            self.assert_role("a", "Standby")
            self.assert_role("b", "Active")
            time.sleep(0.1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                mirrored.exists() and mirrored.read_text() == changed.read_text()):
            time.sleep(0.05)
        synced = mirrored.exists() and mirrored.read_text() == changed.read_text()
        note(f"change made on b while a was down is on a: {synced} "
             f"({(time.monotonic() - t0) * 1000:.0f} ms after a's restart); a sync "
             f"{self.status('a').get('sync')}")
        self.assertTrue(synced, "the rejoined standby did not pull the change made while it was down")
        t_mark = now_mono_us()
        time.sleep(0.3)
        self.assertEqual(self.watch.macs_answering_since(t_mark), {MAC_B})
        self.assertEqual(sb["term"], self.status("b")["term"], "the term moved: a role change")
        self.assert_no_conflict()


if __name__ == "__main__":
    sys.exit(main(__name__))
