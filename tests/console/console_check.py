"""The Easel console in a real browser: Debian's Chromium, headless, driven by Playwright.

Run by tests/it/console.rs against a live Easel with an HTTPS webhook receiver that fails the first
callback and accepts the rest. Walks what a person would do and asserts what the page shows:
sign in, start a generation and watch its images appear, create a key with a webhook, sign in with
it, see its delivery fail and its attempts, redeliver, send a test callback, run the doctor, rotate
the key; on the inspector page create a bin with a configured answer, see requests sent to it
from outside appear live, change its answer, create a key calling it back and see that key's
generation callback arrive live with the bearer matched and the signature verified; sign out;
another user's objects never appear. Screenshots of each page (desktop and a
phone) go to SCREENSHOT_DIR.

Environment: EASEL_URL, ADMIN_KEY (a key that manages keys), RECEIVER_URL, WEBHOOK_KEY,
OTHER_PROMPT, OTHER_KEY_NAME and OTHER_BIN_URL (another user's generation prompt, key name and
inspector bin, which must never show), CHROMIUM (the browser's path), SCREENSHOT_DIR. Prints one JSON line, `RESULT {...}`, with
the keys and secrets it read off the page, for the Rust side to check against the server.
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

URL = os.environ["EASEL_URL"].rstrip("/")
ADMIN_KEY = os.environ["ADMIN_KEY"]
RECEIVER_URL = os.environ["RECEIVER_URL"]
WEBHOOK_KEY = os.environ["WEBHOOK_KEY"]
OTHER_PROMPT = os.environ["OTHER_PROMPT"]
OTHER_KEY_NAME = os.environ["OTHER_KEY_NAME"]
OTHER_BIN_URL = os.environ["OTHER_BIN_URL"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ["SCREENSHOT_DIR"]
TIMEOUT = 30_000

expect.set_options(timeout=TIMEOUT)
problems = []


def step(text):
    print(f"-- {text}", flush=True)


def shot(page, name):
    path = os.path.join(SHOTS, f"{name}.png")
    # From the top, so the sticky header is drawn where it belongs in a full-page picture.
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=path, full_page=True)
    print(f"   screenshot {path}", flush=True)


def rest(method, path, key, body=None):
    """A REST call outside the browser, to check what the page did."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{URL}/api/rest/v1{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def watch(page):
    """Fails the run on any script error or Content-Security-Policy violation in the page."""
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message):
        if message.type == "error" and ("Content Security Policy" in message.text or "Refused to" in message.text):
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("dialog", lambda dialog: dialog.accept())


def sign_in(page, key):
    page.goto(f"{URL}/console")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#signin-key", key)
    page.click("#signin-submit")
    expect(page.locator("#shell")).to_be_visible()
    expect(page.locator("#gen-form")).to_be_visible()


def go(page, route):
    page.goto(f"{URL}/console#/{route}")
    expect(page.locator(f'#nav a[data-page="{route}"]')).to_have_class(re.compile("active"))


def assert_no_other_user(page):
    text = page.locator("body").inner_text()
    assert OTHER_PROMPT not in text, f"another user's generation shows: {OTHER_PROMPT!r}"
    assert OTHER_KEY_NAME not in text, f"another user's key shows: {OTHER_KEY_NAME!r}"
    assert OTHER_BIN_URL.rsplit("/", 1)[1] not in page.content(), f"another user's bin shows: {OTHER_BIN_URL}"


def send(url, method="POST", body=None, headers=None):
    """A request from outside the browser, as curl would send it: (status, headers, body)."""
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def open_request(page, text):
    """The one recorded request whose card contains `text`, expanded."""
    card = page.locator('[data-testid="request"]').filter(has_text=text)
    expect(card).to_have_count(1)
    if card.get_attribute("open") is None:
        card.locator("summary").click()
    return card


def generate(page, prompt, count):
    page.fill("#gen-prompt", prompt)
    page.select_option("#gen-size", "256x256")
    page.select_option("#gen-count", str(count))
    page.click("#gen-submit")
    card = page.locator('[data-testid="generation"]', has_text=prompt)
    expect(card).to_have_count(1)
    return card


def main():
    os.makedirs(SHOTS, exist_ok=True)
    result = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        desktop = browser.new_context(viewport={"width": 1280, "height": 860})
        page = desktop.new_page()
        watch(page)

        step("the sign-in page, and a refused key in words")
        page.goto(f"{URL}/console")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#shell")).to_be_hidden()
        page.fill("#signin-key", "00000000-0000-0000-0000-000000000000")
        page.click("#signin-submit")
        expect(page.locator("#signin-error")).to_contain_text("not accepted")
        shot(page, "01-sign-in-refused")

        step("sign in: an empty gallery says what to do")
        page.fill("#signin-key", ADMIN_KEY)
        page.click("#signin-submit")
        expect(page.locator("#who-name")).to_have_text("admin")
        expect(page.locator("#gallery [data-testid=empty]")).to_contain_text("Describe an image")
        assert page.evaluate("() => sessionStorage.getItem('easel.console.key')") == ADMIN_KEY
        assert page.evaluate("() => document.cookie") == "", "the console sets no cookie"
        shot(page, "02-generations-empty")

        step("a generation with no prompt is refused in words")
        page.click("#gen-submit")
        expect(page.locator("#gen-form .error")).to_contain_text("Write a prompt first")

        step("start a generation: it shows as rendering, then its images appear without a reload")
        card = generate(page, "A lighthouse at dawn, oil painting", 2)
        expect(card).to_have_attribute("data-status", "PENDING")
        expect(card.locator(".placeholder")).to_have_count(2)
        shot(page, "03-generation-pending")
        expect(card).to_have_attribute("data-status", "COMPLETE")
        thumbs = card.locator('[data-testid="thumb"] img')
        expect(thumbs).to_have_count(2)
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=thumb] img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert_no_other_user(page)
        shot(page, "04-generations")

        step("a thumbnail opens full size")
        card.locator('[data-testid="thumb"]').first.click()
        expect(page.locator("#lightbox")).to_be_visible()
        page.wait_for_function("() => document.querySelector('#lightbox-image').naturalWidth === 256")
        full = page.locator("#lightbox-image").get_attribute("src")
        assert "/cdn/" in full, full
        shot(page, "05-image-full-size")
        page.keyboard.press("Escape")
        expect(page.locator("#lightbox")).to_be_hidden()

        step("API keys: create one with a webhook; the key and signing secret are shown once")
        go(page, "keys")
        expect(page.locator('[data-testid="key"]')).to_have_count(1)
        page.fill("#key-name", "Receiver key")
        page.fill("#key-webhook-url", "http://not-https.example/hook")
        page.click("#key-create")
        expect(page.locator("#key-form .error")).to_contain_text("webhookCallbackUrl")
        page.fill("#key-webhook-url", RECEIVER_URL)
        page.fill("#key-webhook-key", WEBHOOK_KEY)
        page.check("#key-manage")
        page.click("#key-create")
        reveal = page.locator('[data-testid="new-key"]')
        expect(reveal).to_be_visible()
        new_key = page.locator('[data-testid="new-key-value"]').input_value()
        signing_secret = page.locator('[data-testid="new-key-secret"]').input_value()
        assert re.fullmatch(r"[0-9a-f-]{36}", new_key), new_key
        assert signing_secret.startswith("whsec_"), signing_secret
        result["created_key"] = new_key
        result["signing_secret"] = signing_secret
        rows = page.locator('[data-testid="key"]')
        expect(rows).to_have_count(2)
        row = rows.filter(has_text="Receiver key")
        expect(row).to_contain_text("********" + new_key[-4:])
        expect(row).to_contain_text(RECEIVER_URL)
        expect(row).to_contain_text("manages keys")
        list_text = page.locator("#key-list").inner_text()
        assert new_key not in list_text and signing_secret not in list_text and WEBHOOK_KEY not in list_text
        assert_no_other_user(page)
        shot(page, "06-keys-created")
        page.click("text=I have copied them")
        expect(reveal).to_have_count(0)
        page.reload()
        expect(page.locator('[data-testid="key"]')).to_have_count(2)
        assert new_key not in page.content() and signing_secret not in page.content(), "shown only once"

        step("sign out, and in with the new key")
        page.click("#signout")
        expect(page.locator("#signin")).to_be_visible()
        assert page.evaluate("() => sessionStorage.length") == 0
        sign_in(page, new_key)

        step("a generation with the new key: its callback fails at first")
        card = generate(page, "A harbour in the rain", 1)
        expect(card).to_have_attribute("data-status", "COMPLETE")
        generation_id = card.get_attribute("data-id")
        result["generation_id"] = generation_id

        step("deliveries: the failed attempt in the timeline, with its class and sentence")
        go(page, "deliveries")
        delivery = page.locator('[data-testid="delivery"]').filter(has_text=generation_id[:8])
        deadline = time.time() + 30
        while delivery.count() == 0 or delivery.get_attribute("data-status") != "failed":
            assert time.time() < deadline, "the failed delivery did not show"
            page.click("#deliveries-refresh")
            page.wait_for_timeout(300)
        expect(delivery.locator(".badge").first).to_have_text("failed")
        attempt = delivery.locator('[data-testid="attempt"]')
        expect(attempt).to_have_count(1)
        expect(attempt).to_contain_text("Attempt 1")
        expect(attempt).to_contain_text("http_status")
        expect(attempt).to_contain_text("500")
        expect(attempt.locator(".attempt-detail")).not_to_be_empty()
        shot(page, "07-delivery-failed")

        step("filters: failed shows it, succeeded shows none (with an empty state)")
        page.select_option("#filter-status", "succeeded")
        page.click("#delivery-filters button[type=submit]")
        expect(page.locator("#delivery-list [data-testid=empty]")).to_contain_text("No deliveries match")
        page.select_option("#filter-status", "failed")
        page.click("#delivery-filters button[type=submit]")
        expect(page.locator('[data-testid="delivery"]')).to_have_count(1)

        step("redeliver: a second attempt succeeds")
        page.locator('[data-testid="redeliver"]').first.click()
        expect(page.locator("#toast")).to_contain_text("Redelivery queued")
        page.click("#delivery-filters button.ghost")  # clear the filters
        delivery = page.locator('[data-testid="delivery"]').filter(has_text=generation_id[:8])
        deadline = time.time() + 30
        while delivery.get_attribute("data-status") != "succeeded":
            assert time.time() < deadline, "the redelivery did not succeed"
            page.click("#deliveries-refresh")
            page.wait_for_timeout(300)
        attempts = delivery.locator('[data-testid="attempt"]')
        expect(attempts).to_have_count(2)
        expect(attempts.nth(1)).to_contain_text("HTTP 200")
        assert_no_other_user(page)
        shot(page, "08-delivery-redelivered")

        step("webhook tools: a test callback is delivered; the doctor reports")
        go(page, "webhook")
        expect(page.locator("#webhook-state")).to_contain_text(RECEIVER_URL)
        page.click("#webhook-test")
        expect(page.locator('[data-testid="test-result"]')).to_contain_text("delivered")
        shot(page, "09-webhook-test")
        page.click("#webhook-doctor")
        report = page.locator('[data-testid="doctor-report"]')
        expect(report).to_be_visible()
        expect(report).to_contain_text("tls")
        shot(page, "10-webhook-doctor")

        step("rotate the key the console is signed in with; both shown, then the old one deleted")
        go(page, "keys")
        row = page.locator('[data-testid="key"]').filter(has_text="signed in with this key")
        expect(row).to_contain_text("Receiver key")
        expect(row.locator('[data-testid="delete-key"]')).to_be_disabled()
        row.locator('[data-testid="rotate"]').click()
        expect(page.locator('[data-testid="rotation"]')).to_contain_text("same webhook URL")
        page.click("#rotate-confirm")
        expect(page.locator('[data-testid="rotation"]')).to_contain_text("Replacement created")
        expect(page.locator('[data-testid="old-key"]')).to_have_text("********" + new_key[-4:])
        rotated_key = page.locator('[data-testid="rotated-key-value"]').input_value()
        assert rotated_key != new_key
        expect(page.locator('[data-testid="rotation"]')).to_contain_text("old key's signing secret")
        expect(page.locator('[data-testid="key"]')).to_have_count(3)
        shot(page, "11-rotation-both-keys")
        page.click("#rotate-delete-old")
        expect(page.locator('[data-testid="rotation-done"]')).to_contain_text("Rotation complete")
        expect(page.locator('[data-testid="key"]')).to_have_count(2)
        assert page.evaluate("() => sessionStorage.getItem('easel.console.key')") == rotated_key
        expect(page.locator('[data-testid="key"]').filter(has_text="signed in with this key")).to_contain_text(rotated_key[-4:])
        shot(page, "12-rotation-done")
        assert rest("GET", "/me", new_key)[0] == 401, "the old key is deleted"
        assert rest("GET", "/me", rotated_key)[0] == 200
        result["rotated_key"] = rotated_key

        step("a generation with the rotated key calls back the same webhook")
        go(page, "generations")
        card = generate(page, "After the rotation", 1)
        expect(card).to_have_attribute("data-status", "COMPLETE")
        result["rotated_generation_id"] = card.get_attribute("data-id")
        page.reload()
        expect(page.locator('[data-testid="generation"]')).to_have_count(3)
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=thumb] img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert_no_other_user(page)
        shot(page, "15-generations-gallery")

        step("inspector: no bins yet says what to do; a bin with a configured answer")
        go(page, "inspector")
        expect(page.locator("#bin-list [data-testid=empty]")).to_contain_text("No bins yet")
        assert_no_other_user(page)
        page.fill("#bin-form-status", "1000")
        page.click("#bin-form-submit")
        expect(page.locator("#bin-form .error")).to_contain_text("status must be a whole number from 100 to 999")
        page.fill("#bin-form-status", "202")
        page.fill("#bin-form-headers", "X-Inspected: yes")
        page.fill("#bin-form-body", "seen by the inspector")
        page.fill("#bin-form-delay", "0")
        page.click("#bin-form-submit")
        expect(page).to_have_url(re.compile(r"#/inspector\?bin=[0-9a-f-]{36}$"))
        bin_url = page.locator("#bin-head [data-testid=bin-url]").input_value()
        bin_id = bin_url.rsplit("/", 1)[1]
        assert bin_url == f"{URL}/inspect/{bin_id}", bin_url
        expect(page.locator("#bin-facts")).to_contain_text("answers 202")
        expect(page.locator("#request-list [data-testid=empty]")).to_contain_text("No requests yet")
        expect(page.locator("#follow-state")).to_have_attribute("data-state", "live")
        # Everything from here on must arrive without a reload: this mark would be lost by one.
        page.evaluate("() => { window.__sameDocument = true; }")
        shot(page, "16-inspector-bin-empty")

        step("a request sent from outside (like curl) appears live, answered as configured")
        status, headers, body = send(f"{bin_url}/from-outside?x=1", body=b'{"hello": "inspector"}',
                                     headers={"Content-Type": "application/json", "X-Test": "yes"})
        assert (status, body, headers["X-Inspected"]) == (202, b"seen by the inspector", "yes"), (status, body)
        card = open_request(page, "/from-outside?x=1")
        expect(card).to_contain_text("POST")
        expect(card).to_contain_text('"hello": "inspector"')
        expect(card.locator("table.headers")).to_contain_text("x-test")
        expect(card).to_contain_text("22 bytes")
        expect(card).to_contain_text("127.0.0.1:")
        expect(card.locator('[data-testid="no-checks"]')).to_be_visible()
        send(f"{bin_url}/binary", method="PUT", body=bytes([0xFF, 0xFE, 0x00, 0x01, 0x80]))
        binary = open_request(page, "/binary")
        expect(binary.locator('[data-testid="binary"]')).to_contain_text("binary body")
        expect(binary).to_contain_text("5 bytes")

        step("a request with fetch() from a page appears too, newest first")
        status = page.evaluate("url => fetch(url + '/from-fetch', {method: 'DELETE'}).then(r => r.status)", bin_url)
        assert status == 202, status
        open_request(page, "/from-fetch")
        expect(page.locator('[data-testid="request"]').first).to_contain_text("/from-fetch")
        expect(page.locator("#bin-facts")).to_contain_text("3 requests")

        step("change the bin's answer: the next request gets it")
        page.click("#bin-change")
        expect(page.locator("#bin-answer-status")).to_have_value("202")
        expect(page.locator("#bin-answer-headers")).to_have_value("X-Inspected: yes")
        page.fill("#bin-answer-status", "200")
        page.fill("#bin-answer-headers", "")
        page.fill("#bin-answer-body", "changed")
        page.click("#bin-answer-submit")
        expect(page.locator("#bin-facts")).to_contain_text("answers 200")
        status, _, body = send(f"{bin_url}/after-change", method="GET")
        assert (status, body) == (200, b"changed"), (status, body)
        open_request(page, "/after-change")

        step("create a key calling back this bin; its generation's callback arrives live, checked")
        page.click("#bin-key")
        hook_key = page.locator("#bin-key-hook-key").input_value()
        assert len(hook_key) >= 16, hook_key
        page.click("#bin-key-create")
        expect(page.locator('[data-testid="new-key"]')).to_be_visible()
        bin_key = page.locator('[data-testid="new-key-value"]').input_value()
        assert page.locator('[data-testid="new-key-secret"]').input_value().startswith("whsec_")
        page.click("text=I have copied them")
        status, job = rest("POST", "/generations", bin_key,
                           {"prompt": "Watched by the inspector", "width": 256, "height": 256, "num_images": 1})
        assert status == 200, job
        bin_generation = job["sdGenerationJob"]["generationId"]
        callback = page.locator('[data-testid="request"]').filter(has_text=bin_generation)
        expect(callback).to_have_count(1, timeout=60_000)
        callback = open_request(page, bin_generation)
        expect(callback).to_contain_text("in-process")
        expect(callback.locator('[data-testid="check-bearer"]')).to_have_attribute("data-ok", "true")
        expect(callback.locator('[data-testid="check-bearer"]')).to_contain_text("Bearer matched")
        expect(callback.locator('[data-testid="check-signature"]')).to_have_attribute("data-ok", "true")
        expect(callback.locator('[data-testid="check-signature"]')).to_contain_text("Signature verified")
        assert hook_key not in page.locator("#request-list").inner_text(), "the webhook key is shown masked"
        assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
        expect(page.locator("#toast")).to_be_hidden()  # the "Saved" note goes by itself
        shot(page, "17-inspector-callback")
        result["bin_id"] = bin_id
        result["bin_generation_id"] = bin_generation
        result["bin_key"] = bin_key

        step("a forged callback to the same bin shows both checks failing, in words")
        send(bin_url, body=b"{}", headers={"Authorization": "Bearer guessed", "webhook-id": "msg_forged",
                                          "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,Zm9yZ2Vk"})
        forged = open_request(page, "msg_forged")
        expect(forged.locator('[data-testid="check-bearer"]')).to_have_attribute("data-ok", "false")
        expect(forged.locator('[data-testid="check-signature"]')).to_have_attribute("data-ok", "false")
        expect(forged.locator('[data-testid="check-signature"]')).to_contain_text("no v1 signature matches")

        step("the bins list: URL, count, expiry; another user's bin is missing; delete a bin")
        status, spare_bin = rest("POST", "/inspector/bins", rotated_key, {})
        assert status == 201, spare_bin
        go(page, "inspector")
        rows = page.locator('[data-testid="bin"]')
        expect(rows).to_have_count(2)
        row = page.locator(f'[data-testid="bin"][data-id="{bin_id}"]')
        expect(row.locator("[data-testid=bin-url]")).to_have_value(bin_url)
        expect(row).to_contain_text("6 requests")
        expect(row).to_contain_text("expires")
        assert_no_other_user(page)
        shot(page, "18-inspector-bins")
        page.locator(f'[data-testid="bin"][data-id="{spare_bin["id"]}"] [data-testid="delete-bin"]').click()
        expect(page.locator("#toast")).to_contain_text("Bin deleted")
        expect(rows).to_have_count(1)
        assert rest("GET", f"/inspector/bins/{spare_bin['id']}", rotated_key)[0] == 404
        page.goto(f"{URL}/console#/inspector?bin={OTHER_BIN_URL.rsplit('/', 1)[1]}")
        expect(page.locator("#bin-head [data-testid=empty]")).to_contain_text("No such bin")

        step("a phone: every page fits the screen")
        phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
        mobile = phone.new_page()
        watch(mobile)
        sign_in(mobile, rotated_key)
        for route in ["generations", "deliveries", "keys", "webhook", "inspector"]:
            go(mobile, route)
            mobile.wait_for_load_state("networkidle")
            expect(mobile.locator("#main h1")).to_be_visible()
            if route == "generations":
                expect(mobile.locator('[data-testid="generation"]').first).to_be_visible()
            if route == "deliveries":
                expect(mobile.locator('[data-testid="delivery"]').first).to_be_visible()
            if route == "keys":
                expect(mobile.locator('[data-testid="key"]').first).to_be_visible()
            if route == "inspector":
                expect(mobile.locator('[data-testid="bin"]').first).to_be_visible()
            overflow = mobile.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{route}: the page is {overflow} px wider than the phone"
            shot(mobile, f"13-phone-{route}")
        mobile.goto(f"{URL}/console#/inspector?bin={result['bin_id']}")
        expect(mobile.locator("#follow-state")).to_have_attribute("data-state", "live")
        open_request(mobile, result["bin_generation_id"])
        overflow = mobile.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"a bin's requests: the page is {overflow} px wider than the phone"
        shot(mobile, "13-phone-inspector-bin")
        phone.close()

        step("delete a key from its row (after confirming)")
        status, spare = rest("POST", "/keys", rotated_key, {"name": "Spare key"})
        assert status == 200, spare
        go(page, "keys")
        spare_row = page.locator('[data-testid="key"]').filter(has_text="Spare key")
        expect(spare_row).to_have_count(1)
        spare_row.locator('[data-testid="delete-key"]').click()
        expect(page.locator("#toast")).to_contain_text("deleted")
        expect(spare_row).to_have_count(0)
        assert rest("GET", "/me", spare["key"])[0] == 401

        step("a key that may not manage keys sees why, in words")
        status, plain = rest("POST", "/keys", rotated_key, {"name": "plain"})
        assert status == 200, plain
        page.click("#signout")
        sign_in(page, plain["key"])
        go(page, "keys")
        expect(page.locator('[data-testid="keys-forbidden"]')).to_contain_text("cannot manage API keys")
        shot(page, "14-keys-forbidden")

        step("sign out: the key is gone from the tab, and pages ask to sign in")
        page.click("#signout")
        expect(page.locator("#signin")).to_be_visible()
        assert page.evaluate("() => sessionStorage.length") == 0
        page.goto(f"{URL}/console#/keys")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#shell")).to_be_hidden()

        step("another site cannot frame the console (clickjacking)")
        framer = browser.new_page()
        refusals = []
        framer.on("console", lambda message: refusals.append(message.text))
        framer.set_content(f'<iframe id="victim" src="{URL}/console" width="800" height="600"></iframe>')
        framer.wait_for_timeout(1000)
        frame = framer.frame_locator("#victim")
        assert frame.locator("#signin-form").count() == 0, "the console rendered inside a frame"
        assert any("frame-ancestors" in text or "X-Frame-Options" in text for text in refusals), refusals
        framer.close()

        browser.close()

    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print("RESULT " + json.dumps(result), flush=True)
    print("console check passed", flush=True)


if __name__ == "__main__":
    main()
