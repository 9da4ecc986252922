// Starts `tickwire serve` for the tests in this folder (the binary is
// $TICKWIRE_BIN, set by tests/browser.rs).

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

/** How long a server may take to print its URL. */
const START_MS = 10_000;

/**
 * Runs `bin serve --listen listen ...args`; resolves with `{proc, port}`
 * once it printed its URL, rejects (and kills it) if it did not within
 * START_MS or exited first. The caller kills `proc`.
 */
export function startServer(bin, listen, args = []) {
  if (!bin) return Promise.reject(new Error("set TICKWIRE_BIN to the tickwire binary"));
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ["serve", "--listen", listen, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    proc.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`${bin} printed no URL within ${START_MS / 1000} s; stderr: ${stderr}`));
    }, START_MS);
    proc.on("error", (e) => reject(new Error(`cannot start ${bin}: ${e.message}`)));
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before printing its URL; stderr: ${stderr}`));
    });
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = line.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: Number(m[1]) });
      }
    });
  });
}
