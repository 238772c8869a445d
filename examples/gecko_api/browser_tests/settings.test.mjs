// The Gecko example's Settings > API Keys page, driven as a person would,
// in Debian's Chromium (headless) through Playwright.
//
// Starts the example server itself (the binary built by run.sh) on a free
// port with a temporary SQLite database, reads the demo users' passwords
// from what it prints at its first start, runs, and stops it.
//
//   GECKO_API_BIN   the example binary (default: $CARGO_TARGET_DIR or
//                   ../../../target, then debug/examples/gecko_api)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   SCREENSHOTS     a folder: save the README's screenshots there

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR || path.join(here, "..", "..", "..", "target");
const binary = process.env.GECKO_API_BIN || path.join(targetDir, "debug", "examples", "gecko_api");
const screenshots = process.env.SCREENSHOTS ? path.resolve(process.env.SCREENSHOTS) : null;

let server; // the example server's process
let output = ""; // what it printed
let base; // http://127.0.0.1:PORT
let browser;
let dataDir;
const passwords = new Map(); // email -> password, as printed once
const pageErrors = []; // script errors in any page: the last test fails on any

/** A free port on the loopback interface. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function waitFor(what, check, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (await check()) return;
    if (server.exitCode !== null || server.pid === undefined) {
      throw new Error(`the server is not running (${server.exitCode}):\n${output}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Whatever happens (a failed `before` skips no `after` on every Node.js
// version), the server and its database do not outlive the tests.
process.on("exit", () => {
  if (server && server.pid !== undefined && server.exitCode === null) server.kill("SIGKILL");
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

before(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "gecko-settings-"));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(binary, [], {
    env: {
      ...process.env,
      DATABASE_URL: `sqlite://${path.join(dataDir, "gecko.db")}?mode=rwc`,
      BIND_ADDR: `127.0.0.1:${port}`,
      RUST_LOG: "info",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.on("error", (error) => (output += `\ncould not start ${binary}: ${error.message}\n`));
  server.stdout.on("data", (chunk) => (output += chunk));
  server.stderr.on("data", (chunk) => (output += chunk));
  // (A binary without them is another checkout's build: CARGO_TARGET_DIR
  // may be shared.)
  await waitFor(`the demo users (is ${binary} this checkout's build?)`, () =>
    /owner@initech\.test\s+team/.test(output),
  );
  await waitFor("the server", async () => {
    try {
      return (await fetch(`${base}/login`)).ok;
    } catch {
      return false;
    }
  });
  for (const [, email, password] of output.matchAll(/^\s+(owner@\S+)\s+team \S+\s+password (\S+)$/gm)) {
    passwords.set(email, password);
  }
  assert.equal(passwords.size, 3, output);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true });
});

after(async () => {
  await browser?.close();
  if (server && server.pid !== undefined && server.exitCode === null) {
    // Ctrl-C: the server flushes last-used times and stops.
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGINT");
    const timer = setTimeout(() => server.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** A new browser profile (its own cookies) with a page. */
async function newPage({ width = 1280, height = 900, colorScheme = "light", watchConsole = true } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${page.url()}: ${error.message}`));
  // Refusals (4xx) are logged by the browser too; the tests check those.
  page.on("console", (message) => {
    const text = message.text();
    if (watchConsole && message.type() === "error" && !/^Failed to load resource: .* status of 4\d\d/.test(text)) {
      pageErrors.push(`${page.url()}: console: ${text}`);
    }
  });
  return page;
}

async function signIn(page, email, password = passwords.get(email)) {
  await page.goto(`${base}/settings/api-keys`);
  await page.waitForURL(`${base}/login`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "API Keys", level: 1 }).waitFor();
  // The heading is there before the stylesheet on a busy machine; what the
  // tests measure of the layout is the styled page's.
  await page.waitForLoadState("load");
}

/** The dialog's key, as a person would read it. */
async function revealedKey(page) {
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  const key = (await dialog.locator("code").textContent()).trim();
  assert.match(key, /^tk_live_[0-9A-Za-z]+$/);
  return key;
}

/** `GET /api/v1/scans` with `key`, from outside the browser. */
async function scansWith(key) {
  const response = await fetch(`${base}/api/v1/scans`, { headers: { "X-API-Key": key } });
  return { status: response.status, body: await response.json() };
}

async function createKey(page, name) {
  await page.getByLabel("Name", { exact: true }).fill(name);
  const reply = page.waitForResponse((r) => r.url().endsWith("/dashboard/api-keys") && r.request().method() === "POST");
  await page.getByRole("button", { name: "Create key" }).click();
  return reply;
}

/** The table row of the key named `name` that can still be rotated (or any). */
function row(page, name) {
  const escaped = name.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  return page.locator("#key-rows tr", { has: page.getByRole("rowheader", { name: new RegExp(`^${escaped}`) }) });
}

/** Everything of the page a script or a person could read: its HTML, its
 * text, and the values of its fields. */
async function everythingIn(page) {
  return page.evaluate(() =>
    [
      document.documentElement.outerHTML,
      document.body.innerText,
      ...Array.from(document.querySelectorAll("input, textarea, select"), (e) => e.value),
    ].join("\n"),
  );
}

async function shoot(page, name, options = {}) {
  if (!screenshots) return;
  await mkdir(screenshots, { recursive: true });
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), ...options });
}

let acmeKey; // made in the page, deleted later
const acmeKeyName = "CI/CD Pipeline";

test("a wrong password is refused; the right one signs in", async () => {
  const page = await newPage();
  await page.goto(`${base}/login`);
  await page.getByLabel("Email").fill("owner@acme.test");
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong email or password." }).waitFor();
  assert.equal(page.url(), `${base}/login`);
  const cookies = await page.context().cookies();
  assert.equal(cookies.length, 0, "no session for a refused sign-in");

  await signIn(page, "owner@acme.test");
  assert.equal(page.url(), `${base}/settings/api-keys`);
  const [session] = await page.context().cookies();
  assert.equal(session.name, "gecko_session");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  // Scripts cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), "");
  await page.context().close();
});

test("every page carries a CSP that forbids inline scripts and HTML from strings, and needs neither", async () => {
  // The violation below is reported on the console, on purpose.
  const page = await newPage({ watchConsole: false });
  const login = await page.goto(`${base}/login`);
  await signIn(page, "owner@acme.test");
  const settings = await page.reload();
  for (const response of [login, settings]) {
    const csp = response.headers()["content-security-policy"];
    assert.match(csp, /script-src 'self';/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /require-trusted-types-for 'script'/);
    assert.equal(response.headers()["cache-control"], "no-store");
    assert.equal(response.headers()["cross-origin-opener-policy"], "same-origin");
    assert.equal(response.headers()["cross-origin-resource-policy"], "same-origin");
  }
  // The page's own markup: no inline script, handler or style.
  const inline = await page.evaluate(() => ({
    scripts: Array.from(document.scripts).filter((s) => !s.src).length,
    handlers: Array.from(document.querySelectorAll("*")).filter((e) =>
      Array.from(e.attributes).some((a) => a.name.startsWith("on")),
    ).length,
    styles: document.querySelectorAll("style, [style]").length,
  }));
  assert.deepEqual(inline, { scripts: 0, handlers: 0, styles: 0 });
  // And the browser enforces it. Trusted Types first: HTML or script from
  // a string is refused. (The page's own script works under them: every
  // other test here runs it.)
  const violations = [];
  await page.exposeFunction("reportViolation", (directive) => violations.push(directive));
  const refused = await page.evaluate(() => {
    document.addEventListener("securitypolicyviolation", (e) => window.reportViolation(e.effectiveDirective));
    const attempt = (assign) => {
      try {
        assign();
        return "assigned";
      } catch (error) {
        return error.name;
      }
    };
    return [
      attempt(() => (document.createElement("div").innerHTML = "<b>x</b>")),
      attempt(() => (document.createElement("script").textContent = "window.injected = true")),
    ];
  });
  assert.deepEqual(refused, ["TypeError", "TypeError"]);
  // Then, even as a trusted value, an injected inline script does not run.
  await page.evaluate(() => {
    const policy = trustedTypes.createPolicy("test", { createScript: (s) => s });
    const script = document.createElement("script");
    script.textContent = policy.createScript("window.injected = true");
    document.body.append(script);
  });
  await page.waitForTimeout(200);
  assert.equal(await page.evaluate(() => window.injected), undefined);
  assert.ok(violations.includes("require-trusted-types-for"), `violations: ${violations}`);
  assert.ok(violations.some((d) => d.startsWith("script-src")), `violations: ${violations}`);
  await page.context().close();
});

test("creating a key shows it once in a dialog; it works; it is gone after Done and a reload", async () => {
  const page = await newPage();
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  await signIn(page, "owner@acme.test");
  await page.getByRole("checkbox", { name: "scans:read" }).check();
  const reply = await createKey(page, acmeKeyName);
  assert.equal(reply.status(), 201);
  // The reveal is never cached.
  assert.equal(reply.headers()["cache-control"], "no-store");

  const dialog = page.getByRole("dialog");
  acmeKey = await revealedKey(page);
  await dialog.getByText("it will not be shown again").waitFor();
  await dialog.getByRole("button", { name: "Copy" }).click();
  await dialog.getByText("Copied to the clipboard.").waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), acmeKey);

  // The table shows the new key, masked, never used.
  const newRow = row(page, acmeKeyName);
  await newRow.locator('td[data-label="Last used"]').getByText("Never").waitFor();
  const preview = (await newRow.locator('td[data-label="Key"]').textContent()).trim();
  assert.match(preview, /^tk_live_\w+…\w{4}$/);
  assert.notEqual(preview, acmeKey);

  // Its key works, for acme's scans only.
  const scans = await scansWith(acmeKey);
  assert.equal(scans.status, 200);
  assert.equal(scans.body.data.length, 3);
  assert.ok(scans.body.data.every((s) => s.team === "acme"));

  // Done: the key leaves the page, and no later answer holds it.
  const later = [];
  page.on("response", async (response) => {
    try {
      later.push(`${response.url()}\n${await response.text()}`);
    } catch {
      // A redirect or an empty answer has no body to read.
    }
  });
  await dialog.getByRole("button", { name: "Done" }).click();
  await dialog.waitFor({ state: "hidden" });
  assert.ok(!(await everythingIn(page)).includes(acmeKey), "the key after Done");
  assert.ok(!(await page.content()).includes(acmeKey));
  const reloaded = await page.reload();
  assert.ok(!(await reloaded.text()).includes(acmeKey), "the key in the reloaded HTML");
  assert.ok(!(await everythingIn(page)).includes(acmeKey), "the key after a reload");
  // Last used: the use above, written when the page was rendered.
  await row(page, acmeKeyName).locator('td[data-label="Last used"]').getByText("just now").waitFor();
  await page.waitForTimeout(300);
  assert.ok(later.length > 0);
  for (const answer of later) assert.ok(!answer.includes(acmeKey), `the key in ${answer.split("\n")[0]}`);
  await page.context().close();
});

test("leaving the page clears a revealed key from it", async () => {
  const page = await newPage();
  await signIn(page, "owner@acme.test");
  await createKey(page, "Left behind");
  const key = await revealedKey(page);
  // What the browser fires when the page goes, maybe into the
  // back-forward cache, which would keep the key in its DOM.
  await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent("pagehide", { persisted: true })));
  assert.ok(!(await everythingIn(page)).includes(key), "the key after pagehide");
  await page.getByRole("dialog").waitFor({ state: "hidden" });
  await page.context().close();
});

test("errors from the API are shown in the page", async () => {
  const page = await newPage();
  await signIn(page, "owner@acme.test");
  // Spaces pass the browser's `required`; the API refuses the name.
  const reply = await createKey(page, "   ");
  assert.equal(reply.status(), 422);
  const alert = page.locator("#page-error");
  await alert.waitFor();
  const message = (await alert.textContent()).trim();
  assert.match(message, /name/i);
  assert.equal(message, (await reply.json()).message);
  assert.equal(await page.getByRole("dialog").count(), 0);
  await page.context().close();
});

test("rotating asks for the grace period, shows the successor once, and the old row expires", async () => {
  const page = await newPage();
  await signIn(page, "owner@acme.test");
  await createKey(page, "Deploy bot");
  const first = await revealedKey(page);
  await page.getByRole("button", { name: "Done" }).click();

  await page.getByRole("button", { name: "Rotate Deploy bot" }).click();
  const rotate = page.getByRole("dialog");
  for (const choice of ["Now", "1 hour", "24 hours", "7 days"]) {
    await rotate.getByRole("radio", { name: choice, exact: true }).waitFor();
  }
  await rotate.getByRole("radio", { name: "1 hour", exact: true }).check();
  await rotate.getByRole("button", { name: "Rotate key" }).click();
  const second = await revealedKey(page);
  assert.notEqual(second, first);
  await page.getByRole("dialog").getByText("it will not be shown again").waitFor();
  await shoot(page, "settings-reveal-light-1280");
  await page.getByRole("button", { name: "Done" }).click();

  // The old key lives out its hour beside its successor, and says so.
  // (By the badge: "Rotate" and "Delete" read "RotateDelete" as text.)
  const old = page.locator("#key-rows tr", { has: page.locator(".badge", { hasText: "Rotated" }) });
  assert.equal(await old.count(), 1);
  await old.getByText("Old key: expires in 1 hour").waitFor();
  assert.equal(await old.getByRole("button", { name: /^Rotate/ }).count(), 0);
  assert.equal((await scansWith(first)).status, 200);
  assert.equal((await scansWith(second)).status, 200);

  // "Now": the successor's successor works and the successor is refused.
  await page.getByRole("button", { name: "Rotate Deploy bot" }).click();
  await page.getByRole("dialog").getByRole("radio", { name: "Now", exact: true }).check();
  await page.getByRole("dialog").getByRole("button", { name: "Rotate key" }).click();
  const third = await revealedKey(page);
  await page.getByRole("button", { name: "Done" }).click();
  assert.equal((await scansWith(third)).status, 200);
  assert.equal((await scansWith(second)).status, 401);
  assert.ok(!(await everythingIn(page)).includes(third));
  await page.context().close();
});

test("a second user never sees nor reaches the first team's keys", async () => {
  const page = await newPage();
  await signIn(page, "owner@globex.test");
  const table = await page.locator("#key-rows").innerHTML();
  for (const acme of [acmeKeyName, "Deploy bot", "Quickstart", acmeKey.slice(0, 20)]) {
    assert.ok(!table.includes(acme), `${acme} shown to globex`);
  }
  assert.ok(!(await page.content()).includes("acme"), "acme named to globex");
  // Enterprise: every key expires, so "Never" is not offered.
  const expiries = await page.getByLabel("Expires").locator("option").allTextContents();
  assert.deepEqual(expiries, ["In 30 days", "In 90 days"]);
  // Even a hand-made call with globex's own token cannot touch acme's key.
  const acmeId = acmeKey.slice("tk_live_".length, "tk_live_".length + 12);
  const status = await page.evaluate(
    async ([id]) => {
      const token = document.querySelector('meta[name="csrf-token"]').content;
      const response = await fetch(`/dashboard/api-keys/${id}`, { method: "DELETE", headers: { "X-CSRF-Token": token } });
      return response.status;
    },
    [acmeId],
  );
  assert.equal(status, 404);
  assert.equal((await scansWith(acmeKey)).status, 200, "acme's key untouched");
  await page.context().close();
});

test("a cross-site POST, or one without the CSRF token, is refused", async () => {
  const page = await newPage();
  await signIn(page, "owner@acme.test");
  const before = await page.locator("#key-rows tr").count();

  // Another site (another origin) posts forms to the page's routes.
  const attackerPort = await freePort();
  const attacker = createServer((_, response) => {
    response.setHeader("content-type", "text/html");
    response.end(`<!doctype html>
      <form id="create" method="post" action="${base}/dashboard/api-keys" enctype="text/plain">
        <input name='{"name":"forged","x":"' value='"}'></form>
      <form id="logout" method="post" action="${base}/logout"></form>`);
  });
  await new Promise((resolve) => attacker.listen(attackerPort, "127.0.0.1", resolve));
  try {
    for (const form of ["create", "logout"]) {
      await page.goto(`http://127.0.0.1:${attackerPort}/`);
      const reply = page.waitForResponse((r) => r.request().method() === "POST");
      await page.evaluate((id) => document.getElementById(id).submit(), form);
      const response = await reply;
      assert.equal(response.status(), 403, form);
      assert.equal((await response.json()).error, "cross_site");
    }
  } finally {
    attacker.close();
  }

  // The page's own origin, with the session cookie, but no token.
  const forged = await page.context().request.post(`${base}/dashboard/api-keys`, {
    headers: { Origin: base, "Content-Type": "application/json" },
    data: { name: "forged" },
  });
  assert.equal(forged.status(), 403);
  assert.equal((await forged.json()).error, "csrf_failed");

  // Still signed in, nothing made.
  await page.goto(`${base}/settings/api-keys`);
  await page.getByRole("heading", { name: "API Keys", level: 1 }).waitFor();
  assert.equal(await page.locator("#key-rows tr").count(), before);
  assert.ok(!(await page.content()).includes("forged"));
  await page.context().close();
});

test("deleting asks for confirmation, and the key is refused at once", async () => {
  const page = await newPage();
  await signIn(page, "owner@acme.test");
  await page.getByRole("button", { name: `Delete ${acmeKeyName}` }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText(acmeKeyName).waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
  assert.equal((await scansWith(acmeKey)).status, 200, "Cancel deletes nothing");

  await page.getByRole("button", { name: `Delete ${acmeKeyName}` }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete key" }).click();
  await page.getByRole("status").filter({ hasText: "Deleted" }).waitFor();
  await page.getByRole("button", { name: `Delete ${acmeKeyName}` }).waitFor({ state: "detached" });
  const refused = await scansWith(acmeKey);
  assert.equal(refused.status, 401);
  assert.equal(refused.body.error, "unauthorized");
  await page.context().close();
});

test("a team whose plan has no API access sees why instead of the form", async () => {
  const page = await newPage();
  await signIn(page, "owner@initech.test");
  await page.getByRole("heading", { name: "Your plan has no API access" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Create key" }).count(), 0);
  await row(page, "Legacy integration").waitFor();
  await page.context().close();
});

test("usable at 375 px and at 1280 px, light and dark", async () => {
  // The one-time reveal on a phone, in the dark.
  const phone = await newPage({ width: 375, height: 812, colorScheme: "dark" });
  await signIn(phone, "owner@acme.test");
  await createKey(phone, "Staging deploy");
  await revealedKey(phone);
  await shoot(phone, "settings-reveal-dark-375");
  await phone.getByRole("button", { name: "Done" }).click();
  await phone.context().close();

  for (const colorScheme of ["light", "dark"]) {
    for (const width of [375, 1280]) {
      const page = await newPage({ width, height: width === 375 ? 812 : 900, colorScheme });
      await signIn(page, "owner@acme.test");
      // Nothing wider than the screen; every action reachable.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${width} px: ${overflow} px too wide`);
      const actions = await page.getByRole("button", { name: /^(Rotate|Delete) / }).all();
      assert.ok(actions.length >= 4);
      for (const button of actions) {
        await button.scrollIntoViewIfNeeded();
        const box = await button.boundingBox();
        assert.ok(box.x >= 0 && box.x + box.width <= width, `${width} px: a button off screen`);
        assert.ok(box.height >= 32, "big enough to tap");
      }
      await page.getByLabel("Name", { exact: true }).waitFor();
      await page.getByRole("button", { name: "Create key" }).waitFor();
      // prefers-color-scheme: the page follows it.
      const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      const [r, g, b] = background.match(/\d+/g).map(Number);
      assert.equal((r + g + b) / 3 > 128, colorScheme === "light", `${colorScheme}: ${background}`);
      await page.evaluate(() => window.scrollTo(0, 0));
      await shoot(page, `settings-${colorScheme}-${width}`, { fullPage: true });
      await page.context().close();
    }
  }
});

test("signing out ends the session", async () => {
  const page = await newPage();
  await signIn(page, "owner@acme.test");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${base}/login`);
  assert.deepEqual(await page.context().cookies(), []);
  await page.goto(`${base}/settings/api-keys`);
  assert.equal(page.url(), `${base}/login`);
  const list = await page.context().request.get(`${base}/dashboard/api-keys`);
  assert.equal(list.status(), 401);
  await page.context().close();
});

test("no page had a script error", () => {
  assert.deepEqual(pageErrors, []);
});
