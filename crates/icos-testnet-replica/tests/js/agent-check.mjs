// Drives a testnet with the JavaScript agent (@dfinity/agent), the client
// that most IC front ends use.
//
//   node agent-check.mjs URL ROOT_KEY_HEX COUNTER_ID...
//
// For each identity (anonymous, Ed25519, ECDSA P-256) and each counter
// canister: fetch the root key from URL's /api/v2/status and compare it with
// ROOT_KEY_HEX, query `read`, call `inc` (the agent verifies the certificate
// of the reply), and read
// /time from the state tree with a verified certificate. Prints one line per
// check and exits 1 on the first failure.

import { Actor, Certificate, HttpAgent, AnonymousIdentity, lookupResultToBuffer } from "@dfinity/agent";
import { Ed25519KeyIdentity, ECDSAKeyIdentity } from "@dfinity/identity";
import { IDL } from "@dfinity/candid";
import { Principal } from "@dfinity/principal";
import { webcrypto } from "node:crypto";

// Node 18 (Debian bookworm) has WebCrypto but not as a global.
globalThis.crypto ??= webcrypto;

const [url, rootKeyHex, ...counters] = process.argv.slice(2);
if (!url || !rootKeyHex || counters.length === 0) {
  console.error("usage: node agent-check.mjs URL ROOT_KEY_HEX COUNTER_ID...");
  process.exit(2);
}

const counterIdl = ({ IDL }) =>
  IDL.Service({
    inc: IDL.Func([], [IDL.Nat], []),
    read: IDL.Func([], [IDL.Nat], ["query"]),
  });

const hex = (bytes) => Buffer.from(bytes).toString("hex");

function check(ok, what) {
  if (!ok) {
    throw new Error(`check failed: ${what}`);
  }
  console.log(`ok: ${what}`);
}

async function exercise(name, identity) {
  const agent = await HttpAgent.create({ host: url, identity, shouldFetchRootKey: true });
  check(hex(agent.rootKey) === rootKeyHex, `${name}: root key from /api/v2/status is the testnet's`);
  for (const id of counters) {
    const canisterId = Principal.fromText(id);
    const counter = Actor.createActor(counterIdl, { agent, canisterId });
    // Replicas do not share state (see the crate README), so values read
    // from different replicas are not compared with each other.
    const value = await counter.read();
    check(typeof value === "bigint", `${name}: ${id} query read = ${value}`);
    const after = await counter.inc();
    check(typeof after === "bigint" && after >= 1n, `${name}: ${id} update inc = ${after} (certified reply)`);
    const path = [new TextEncoder().encode("time")];
    const state = await agent.readState(canisterId, { paths: [path] });
    const cert = await Certificate.create({
      certificate: state.certificate,
      rootKey: agent.rootKey,
      canisterId,
    });
    const time = lookupResultToBuffer(cert.lookup_path(path));
    check(time !== undefined && time.length > 0, `${name}: ${id} read_state /time verified`);
  }
  const status = await agent.status();
  check(status !== undefined && status.root_key !== undefined, `${name}: status has a root key`);
}

try {
  await exercise("anonymous", new AnonymousIdentity());
  await exercise("ed25519", Ed25519KeyIdentity.generate(new Uint8Array(32).fill(9)));
  await exercise("ecdsa-p256", await ECDSAKeyIdentity.generate());
  console.log("all checks passed");
} catch (e) {
  console.error(`FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
}
