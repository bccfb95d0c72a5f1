// Opens promoter's pipeline page in Debian's chromium, as a person would, and checks what they
// would see: an image's row and its versions per stage, what waits and why, a blocked and a
// frozen state in words, a promotion in the history; then the same on a phone-sized screen.
// Saves a screenshot. Usage: node check-page.mjs URL SCREENSHOT.png
import { chromium } from 'playwright-core';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node check-page.mjs URL SCREENSHOT.png');
  process.exit(2);
}

// The flags this machine's closed network needs (no background fetches, no first-run work).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const failures = [];
const expect = (ok, what) => { if (!ok) failures.push(what); };

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const response = await page.goto(url, { waitUntil: 'load' });
  expect(response && response.status() === 200, `the page answered ${response && response.status()}`);
  expect(await page.getByRole('heading', { level: 1, name: 'The pipeline' }).isVisible(), 'no "The pipeline" heading');

  const table = page.getByRole('table');
  const columns = await table.getByRole('columnheader').allInnerTexts();
  expect(JSON.stringify(columns.map((c) => c.trim().toLowerCase())) === JSON.stringify(['image', 'fast-feedback', 'extended-test', 'prod']),
    `columns are ${JSON.stringify(columns)}`);

  const app = table.getByRole('row').filter({ has: page.getByRole('rowheader', { name: 'app', exact: true }) });
  expect(await app.count() === 1, 'no row for app');
  const cells = await app.getByRole('cell').allInnerTexts();
  expect(cells.length === 3 && cells[2].includes('1.0.0') && cells[1].includes('1.1.0'),
    `app's cells are ${JSON.stringify(cells)}`);

  const body = await page.locator('main').innerText();
  expect(/1\.1\.0 \([0-9a-f]{12}\) in extended-test for prod: waiting/.test(body), 'app 1.1.0 is not shown waiting');
  expect(body.includes('waiting for soak-complete'), 'no "waiting for soak-complete"');
  expect(/2\.0\.0 \([0-9a-f]{12}\) in extended-test for prod: blocked/.test(body), 'api 2.0.0 is not shown blocked');
  expect(body.includes('quarter-end freeze'), "svc's freeze is not shown");
  expect(/1\.0\.0 \([0-9a-f]{12}\) extended-test → prod, by alert-clear/.test(body), 'no promotion of app 1.0.0 to prod in the history');
  await page.screenshot({ path: screenshot, fullPage: true });

  // A phone: the table reflows into one block per image, nothing scrolls sideways.
  const phone = await browser.newPage({ viewport: { width: 375, height: 800 } });
  await phone.goto(url, { waitUntil: 'load' });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 0, `the page scrolls sideways by ${overflow}px on a 375px screen`);
  expect(await phone.getByText('quarter-end freeze').first().isVisible(), 'the freeze is not visible on a phone');
} finally {
  await browser.close();
}

if (failures.length) {
  console.error(failures.map((f) => `- ${f}`).join('\n'));
  process.exit(1);
}
console.log('the page shows what it should');
