// Bounded waiting for the tests in this folder that talk to a real server.

/**
 * Resolves with `get()`'s first truthy value (checked every 10 ms); rejects
 * after `ms`, naming `what` it waited for.
 */
export function until(what, get, ms) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = () => {
      const value = get();
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`waited ${ms} ms for ${what}`));
      else setTimeout(check, 10);
    };
    check();
  });
}
