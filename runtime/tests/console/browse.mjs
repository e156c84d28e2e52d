// Drives `weir console` in headless Chromium, as a person with a keyboard would, and writes a
// screenshot of every page. Run by the integration test `console::…` (see console.rs), which
// sets up the cluster and checks afterwards what the replay did:
//
//   node browse.mjs <console URL> <screenshot directory>
//
// Environment: WEIR_CHROMIUM (default /usr/bin/chromium), DEPLOYMENT (`tenant/handler`),
// PARTITIONS, NODE (the live node's id), LOG_LINE (a line the handler logged).
// Prints one JSON line: {"replayed_as": "<stream>:<seq>"}.

import { chromium } from "playwright-core";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

const [url, shots] = process.argv.slice(2);
const [tenant, handler] = process.env.DEPLOYMENT.split("/");
const key = `${tenant}.${handler}`;
const partitions = Number(process.env.PARTITIONS);
const node = process.env.NODE;
const logLine = process.env.LOG_LINE;
// Generous: only ever reached when something is wrong.
const patience = { timeout: 60_000 };

await mkdir(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.WEIR_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1366, height: 800 } });
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error") problems.push(`console error: ${message.text()}`);
});
const shoot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

try {
  // Deployments: the live deployment, every partition owned by the node and running.
  await page.goto(`${url}#/deployments`);
  const deployment = page.locator(`section.deployment[data-deployment="${key}"]`);
  await deployment.waitFor(patience);
  for (let p = 0; p < partitions; p++) {
    const row = deployment.locator(`tr[data-partition="${p}"]`);
    await row.locator("td", { hasText: node }).waitFor(patience);
    await row.locator(".state", { hasText: "running" }).waitFor(patience);
  }
  await deployment.locator("svg.chart").first().waitFor(patience);
  await shoot("deployments");

  // Nodes: the node, and what it runs.
  await page.keyboard.press("Tab"); // the skip link comes first
  await page.getByRole("link", { name: "Nodes" }).focus();
  await page.keyboard.press("Enter");
  await page.locator(`tr[data-node="${node}"]`, { hasText: `${tenant}/${handler}` }).waitFor(patience);
  await shoot("nodes");

  // Dead letters: the rejected message, listed with its reason, then shown with its payload.
  await page.getByRole("link", { name: "Dead letters" }).click();
  const row = page.locator("tr[data-dead-letter]", { hasText: "not fixed yet" });
  await row.waitFor(patience);
  const id = await row.getAttribute("data-dead-letter");
  await shoot("dead-letters");
  await row.getByRole("link", { name: id, exact: true }).click();
  await page.locator("pre.payload", { hasText: "reject-unless-fixed" }).waitFor(patience);
  await shoot("dead-letter");

  // Replay it from the keyboard; the page says where it went.
  await page.getByRole("button", { name: `Replay dead letter ${id}` }).focus();
  await page.keyboard.press("Enter");
  const notice = page.locator("#notice.ok", { hasText: `Dead letter ${id} replayed` });
  await notice.waitFor(patience);
  const said = await notice.textContent();
  const replayedAs = said.match(/ as (\S+?)\.$/)?.[1];
  if (!replayedAs) throw new Error(`the replay notice does not say where: ${said}`);
  await page.getByRole("button", { name: `Replay dead letter ${id} again` }).waitFor(patience);
  await shoot("dead-letter-replayed");

  // Logs: the handler's lines, live.
  await page.goto(`${url}#/deployments`);
  await deployment.getByRole("link", { name: "live" }).click();
  await page.locator(".logs li", { hasText: logLine }).waitFor(patience);
  await shoot("logs");

  if (problems.length) throw new Error(problems.join("\n"));
  console.log(JSON.stringify({ replayed_as: replayedAs }));
} catch (error) {
  await shoot("failure").catch(() => {});
  console.error(`${error.message}\n(the page as it was: ${join(shots, "failure.png")})`);
  for (const problem of problems) console.error(problem);
  process.exitCode = 1;
} finally {
  await browser.close();
}
