// Drives Easel with the official Leonardo TypeScript SDK (@leonardo-ai/sdk, pinned in package.json
// and package-lock.json next to this file).
//
// Run by the Rust test `sdk::the_official_typescript_sdk_works_against_easel`, which installs the
// SDK with `npm ci` under `target/`, starts Easel and passes EASEL_URL (http://host:port), EASEL_KEY,
// EASEL_USER_ID and LEONARDO_TS_SDK_DIR (the directory whose node_modules holds the SDK; without
// it, this file's directory). Exits non-zero with a message on the first failed check, and prints
// "typescript SDK check passed" at the end.
//
// The SDK validates every answer with zod (a wrong type or enum value throws
// ResponseValidationError) but silently strips keys its models do not declare. So every answer is
// also compared with its raw JSON: the exact body the SDK parsed (kept by the fetcher below) and,
// for reads that cannot change in between, a plain `fetch` of the documented path, which must
// answer the same. Every key of the raw JSON, at every depth, must survive into the parsed object
// with the same value. The SDK renames keys (`generations_by_pk` -> `generationsByPk`,
// `motionMP4URL` -> `motionMp4URL`, with `remap$` in its models); every such rename only changes
// case and drops underscores, so a raw key is looked up under that spelling.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { deflateSync } from "node:zlib";

const PINNED = "4.21.3";
const SDK_DEFAULT_MODEL = "b24e16ff-06e3-43eb-8d33-4416c2d75876";
const BASE = required("EASEL_URL");
const KEY = required("EASEL_KEY");
const USER_ID = required("EASEL_USER_ID");

const sdkDir = process.env.LEONARDO_TS_SDK_DIR || path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(sdkDir, "package.json"));
const { Leonardo, HTTPClient } = require("@leonardo-ai/sdk");
const errors = require("@leonardo-ai/sdk/sdk/models/errors/index.js");
const { version } = require("@leonardo-ai/sdk/package.json");

class Failure extends Error {}

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`FAILED: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

function check(condition, message) {
  if (!condition) {
    throw new Failure(message);
  }
}

const show = (value) => JSON.stringify(value);
const spelling = (key) => key.replaceAll("_", "").toLowerCase();
const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

/** Every key of `raw`, at every depth, is in `parsed` under the SDK's spelling, with its value. */
function assertNothingDropped(parsed, raw, where) {
  if (raw === null) {
    check(parsed === null, `${where}: sent null but the SDK made it ${show(parsed)}`);
  } else if (Array.isArray(raw)) {
    check(Array.isArray(parsed), `${where}: sent a list but the SDK made it ${show(parsed)}`);
    check(parsed.length === raw.length, `${where}: sent ${raw.length} items, the SDK kept ${parsed.length}`);
    raw.forEach((item, index) => assertNothingDropped(parsed[index], item, `${where}[${index}]`));
  } else if (isObject(raw)) {
    check(isObject(parsed), `${where}: sent an object but the SDK made it ${show(parsed)}`);
    const claimed = new Map();
    for (const [key, value] of Object.entries(raw)) {
      const names = Object.keys(parsed).filter((name) => spelling(name) === spelling(key));
      check(names.length <= 1, `${where}.${key}: the SDK has several keys for it: ${names}`);
      const [name] = names;
      check(
        name !== undefined && parsed[name] !== undefined,
        `${where}.${key}: sent ${show(value)} but the SDK dropped it (its keys: ${Object.keys(parsed)})`,
      );
      check(!claimed.has(name), `${where}: ${claimed.get(name)} and ${key} both became ${name}`);
      claimed.set(name, key);
      assertNothingDropped(parsed[name], value, `${where}.${key}`);
    }
  } else {
    check(parsed === raw, `${where}: sent ${show(raw)} but the SDK made it ${show(parsed)}`);
  }
}

/** An SDK client whose transport (plain `fetch`) keeps the last answer's body. */
function client(key) {
  const transport = { last: null };
  const httpClient = new HTTPClient({
    fetcher: async (input, init) => {
      const response = await (init == null ? fetch(input) : fetch(input, init));
      const request = input instanceof Request ? input : new Request(input, init);
      transport.last = { method: request.method, url: request.url, body: await response.clone().text() };
      return response;
    },
  });
  const leo = new Leonardo({ bearerAuth: key, serverURL: `${BASE}/api/rest/v1`, httpClient, timeoutMs: 30_000 });
  return { leo, transport };
}

/** Calls the SDK; a response it cannot parse becomes a failure that shows the body and why. */
async function call(where, operation) {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof errors.ResponseValidationError) {
      throw new Failure(`${where}: the SDK cannot parse Easel's answer\n${error.pretty()}\nbody: ${error.body}`);
    }
    if (error instanceof errors.LeonardoError) {
      throw new Failure(`${where}: ${error.name}: ${error.message}`);
    }
    throw error;
  }
}

async function plainGet(pathAndQuery, key = KEY) {
  const response = await fetch(`${BASE}/api/rest/v1${pathAndQuery}`, { headers: { authorization: `Bearer ${key}` } });
  const body = await response.text();
  check(response.status === 200, `plain GET ${pathAndQuery}: status ${response.status}: ${body}`);
  return JSON.parse(body);
}

/**
 * The parsed object of an SDK call, after checking status, content type and every field against
 * the raw JSON. `plainPath`: a GET whose plain `fetch` must answer the same JSON.
 */
async function checked(sdk, where, operation, plainPath) {
  const response = await call(where, operation);
  check(response.statusCode === 200, `${where}: status ${response.statusCode}`);
  check(response.contentType.startsWith("application/json"), `${where}: content type ${response.contentType}`);
  check(response.object !== undefined, `${where}: no parsed body`);
  const exchange = sdk.transport.last;
  check(exchange !== null, `${where}: the transport saw no answer`);
  const raw = JSON.parse(exchange.body);
  if (plainPath !== undefined) {
    const plain = await plainGet(plainPath);
    check(
      isDeepStrictEqual(plain, raw),
      `${where}: ${exchange.method} ${exchange.url} answered the SDK ${show(raw)}, plain GET ${plainPath} ${show(plain)}`,
    );
  }
  assertNothingDropped(response.object, raw, where);
  return response.object;
}

const MAGIC = { "image/jpeg": [0xff, 0xd8, 0xff], "image/png": [0x89, 0x50, 0x4e, 0x47] };

/** Downloads `url`, which must be served as `type` (image/jpeg or image/png) and start like one. */
async function download(url, where, type = "image/jpeg") {
  const reply = await fetch(url);
  check(reply.status === 200, `${where}: GET ${url} -> ${reply.status}`);
  const served = reply.headers.get("content-type");
  check(served === type, `${where}: content type ${served}, not ${type}`);
  const bytes = new Uint8Array(await reply.arrayBuffer());
  check(MAGIC[type].every((byte, index) => bytes[index] === byte), `${where}: not an ${type} file`);
  return bytes;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) {
    c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) {
    c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A minimal valid PNG, written by hand: one colour, 8-bit RGB, every row unfiltered. */
function png(width, height, rgb) {
  const chunk = (type, data) => {
    const typed = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const framed = Buffer.alloc(typed.length + 8);
    framed.writeUInt32BE(data.length, 0);
    typed.copy(framed, 4);
    framed.writeUInt32BE(crc32(typed), typed.length + 4);
    return framed;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit, RGB, deflate, no filter method, no interlace
  const row = Buffer.from([0, ...Array.from({ length: width }, () => rgb).flat()]);
  const pixels = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(pixels)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** The form fields of an upload policy, sent as one JSON string; their `key` is the policy's. */
function policyFields(fields, key, where) {
  check(typeof fields === "string", `${where}: fields ${show(fields)} is not a JSON string`);
  let decoded;
  try {
    decoded = JSON.parse(fields);
  } catch (error) {
    throw new Failure(`${where}: fields is not JSON (${error.message}): ${fields}`);
  }
  check(isObject(decoded), `${where}: fields ${fields} is not a JSON object`);
  check(Object.values(decoded).every((value) => typeof value === "string"), `${where}: fields ${fields} are not all strings`);
  check(decoded.key === key, `${where}: key ${show(key)} but fields.key ${show(decoded.key)}`);
  return decoded;
}

/**
 * POSTs every policy field and then the `file` part to `url` as multipart/form-data, with no key
 * (the policy is the authorization); the status and body of the answer.
 */
async function upload(url, fields, bytes) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    form.append(name, value);
  }
  form.append("file", new Blob([bytes], { type: "image/png" }), "init.png");
  const reply = await fetch(url, { method: "POST", body: form });
  return { status: reply.status, body: await reply.text() };
}

async function waitFor(fetchValue, done, where, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fetchValue();
    if (done(value)) {
      return value;
    }
    check(Date.now() < deadline, `${where}: not finished within ${timeoutMs / 1000}s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The error an SDK call throws; a 2xx answer is a failure. */
async function thrown(where, operation) {
  try {
    await operation();
  } catch (error) {
    check(error instanceof errors.LeonardoError, `${where}: threw ${error?.stack ?? error}, not a LeonardoError`);
    return error;
  }
  throw new Failure(`${where}: answered 2xx`);
}

async function main() {
  check(version === PINNED, `@leonardo-ai/sdk ${version} is installed, the check is written for ${PINNED}`);
  const sdk = client(KEY);
  const { leo } = sdk;

  const me = await checked(sdk, "getUserSelf", () => leo.user.getUserSelf(), "/me");
  const details = me.userDetails[0];
  check(details.user.id === USER_ID, `getUserSelf: user id ${details.user.id}`);
  check(Number.isInteger(details.apiConcurrencySlots), "getUserSelf: apiConcurrencySlots");

  const models = await checked(sdk, "listPlatformModels", () => leo.models.listPlatformModels(), "/platformModels");
  const modelIds = models.customModels.map((model) => model.id);
  check(modelIds.includes(SDK_DEFAULT_MODEL), `listPlatformModels: the SDK default model is missing from ${modelIds}`);

  const created = await checked(sdk, "createGeneration", () =>
    leo.image.createGeneration({ prompt: "An oil painting of a cat", width: 512, height: 512, numImages: 2 }),
  );
  const job = created.sdGenerationJob;
  check(job != null && typeof job.generationId === "string", "createGeneration: no generationId");
  check(Number.isInteger(job.apiCreditCost), "createGeneration: apiCreditCost");
  check(typeof job.cost?.amount === "string", "createGeneration: cost.amount");
  const generationId = job.generationId;
  const generationPath = `/generations/${generationId}`;
  const readGeneration = async (plainPath) =>
    (await checked(sdk, "getGenerationById", () => leo.image.getGenerationById(generationId), plainPath))
      .generationsByPk;

  const pending = await waitFor(readGeneration, (g) => g != null && g.status !== "PENDING", "generation");
  check(pending.status === "COMPLETE", `generation status ${pending.status}`);
  const generation = await readGeneration(generationPath);
  check(generation.id === generationId, "getGenerationById: id");
  check(Number.isInteger(generation.seed), "getGenerationById: seed");
  check(generation.imageWidth === 512 && generation.imageHeight === 512, "getGenerationById: size");
  check(generation.generatedImages.length === 2, `${generation.generatedImages.length} images`);
  for (const image of generation.generatedImages) {
    check(image.url.startsWith(`${BASE}/cdn/`), `image url ${image.url}`);
    await download(image.url, "generated image");
  }

  const listPath = `/generations/user/${USER_ID}?offset=0&limit=10`;
  const listGenerations = async () =>
    (
      await checked(
        sdk,
        "getGenerationsByUserId",
        () => leo.image.getGenerationsByUserId(USER_ID, 10, 0),
        listPath,
      )
    ).generations;
  const listed = await listGenerations();
  check(listed.some((g) => g.id === generationId), "getGenerationsByUserId: generation not listed");

  /** The variation `id`, read with getVariationById until done: COMPLETE, with `transformType`. */
  async function finishedVariation(id, transformType, where) {
    const read = async (plainPath) =>
      (await checked(sdk, `getVariationById (${where})`, () => leo.variation.getVariationById(id), plainPath))
        .generatedImageVariationGeneric;
    await waitFor(read, (v) => v.length > 0 && v[0].status !== "PENDING", where);
    const [variation] = await read(`/variations/${id}`);
    check(variation.id === id, `${where}: getVariationById answered ${show(variation)}`);
    check(variation.status === "COMPLETE", `${where}: status ${variation.status}`);
    check(variation.transformType === transformType, `${where}: transformType ${variation.transformType}`);
    return variation;
  }

  /** The job of a variation-creating answer: an id and an integer apiCreditCost. */
  function variationJob(job, where) {
    check(typeof job?.id === "string", `${where}: no id in ${show(job)}`);
    check(Number.isInteger(job.apiCreditCost), `${where}: apiCreditCost ${show(job.apiCreditCost)}`);
    return job;
  }

  const image = generation.generatedImages[0];
  const upscale = await checked(sdk, "createVariationUpscale", () => leo.variation.createVariationUpscale({ id: image.id }));
  const variationId = variationJob(upscale.sdUpscaleJob, "createVariationUpscale").id;
  const variation = await finishedVariation(variationId, "UPSCALE", "upscale");
  await download(variation.url, "upscaled image");

  // The generation, read again and listed, shows the variation under its image.
  const upscaled = await readGeneration(generationPath);
  const nested = upscaled.generatedImages.find((i) => i.id === image.id).generatedImageVariationGenerics;
  check(nested.length === 1 && nested[0].id === variationId, `getGenerationById: variations ${show(nested)}`);
  check(nested[0].status === "COMPLETE" && nested[0].transformType === "UPSCALE", "getGenerationById: variation");
  const relisted = (await listGenerations()).find((g) => g.id === generationId);
  check(
    relisted.generatedImages.some((i) => i.generatedImageVariationGenerics.some((v) => v.id === variationId)),
    "getGenerationsByUserId: the variation is not listed under its image",
  );

  // Background removal (a PNG), unzoom of its result (isVariation) and the universal upscaler.
  const nobg = await checked(sdk, "createVariationNoBG", () => leo.variation.createVariationNoBG({ id: image.id }));
  const nobgId = variationJob(nobg.sdNobgJob, "createVariationNoBG").id;
  const nobgDone = await finishedVariation(nobgId, "NOBG", "nobg");
  check(nobgDone.url.endsWith(".png"), `nobg url ${nobgDone.url}`);
  await download(nobgDone.url, "nobg image", "image/png");
  const unzoom = await checked(sdk, "createVariationUnzoom", () =>
    leo.variation.createVariationUnzoom({ id: nobgId, isVariation: true }),
  );
  const unzoomId = variationJob(unzoom.sdUnzoomJob, "createVariationUnzoom").id;
  check(unzoom.sdUnzoomJob.apiCreditCost === 1, `createVariationUnzoom: apiCreditCost ${unzoom.sdUnzoomJob.apiCreditCost}`);
  const universal = await checked(sdk, "createUniversalUpscalerJob", () =>
    leo.variation.createUniversalUpscalerJob({ generatedImageId: image.id, upscaleMultiplier: 1.5, upscalerStyle: "GENERAL" }),
  );
  const universalId = variationJob(universal.universalUpscaler, "createUniversalUpscalerJob").id;
  for (const [id, transformType] of [
    [unzoomId, "UNZOOM"],
    [universalId, "UPSCALE"],
  ]) {
    const done = await finishedVariation(id, transformType, `${transformType} variation ${id}`);
    await download(done.url, `${transformType} image`);
  }

  // The calculator prices UNIVERSAL_UPSCALER_ULTRA as the universal upscaler charges for the
  // same input: this 512x512 image, made 1.25 times as wide and high.
  const ultraPriced = await checked(sdk, "pricingCalculator (UNIVERSAL_UPSCALER_ULTRA)", () =>
    leo.pricingCalculator.pricingCalculator({
      service: "UNIVERSAL_UPSCALER_ULTRA",
      serviceParams: { universalUpscalerUltra: { inputWidth: 512, inputHeight: 512, upscaleMultiplier: 1.25 } },
    }),
  );
  const ultra = await checked(sdk, "createUniversalUpscalerJob (1.25)", () =>
    leo.variation.createUniversalUpscalerJob({ generatedImageId: image.id, upscaleMultiplier: 1.25 }),
  );
  const ultraJob = variationJob(ultra.universalUpscaler, "createUniversalUpscalerJob (1.25)");
  const ultraCost = ultraPriced.calculateProductionApiServiceCost.cost;
  check(ultraCost === ultraJob.apiCreditCost, `UNIVERSAL_UPSCALER_ULTRA: priced ${ultraCost}, charged ${ultraJob.apiCreditCost}`);
  await finishedVariation(ultraJob.id, "UPSCALE", "universal upscale x1.25");

  // Every variation is listed under its image, each with its transformType (universal upscales
  // are UPSCALE: the SDK's VariationType has no other name for them).
  const varied = (await readGeneration(generationPath)).generatedImages.find((i) => i.id === image.id);
  const listedTypes = new Map(varied.generatedImageVariationGenerics.map((v) => [v.id, v.transformType]));
  const expectedTypes = new Map([
    [variationId, "UPSCALE"],
    [nobgId, "NOBG"],
    [unzoomId, "UNZOOM"],
    [universalId, "UPSCALE"],
    [ultraJob.id, "UPSCALE"],
  ]);
  check(isDeepStrictEqual(listedTypes, expectedTypes), `getGenerationById: variations ${show([...listedTypes])}`);

  const deleted = await checked(sdk, "deleteGenerationById", () => leo.image.deleteGenerationById(generationId));
  check(deleted.deleteGenerationsByPk?.id === generationId, "deleteGenerationById: id");
  const gone = await readGeneration(generationPath);
  check(gone === null, `deleted generation still readable: ${show(gone)}`);

  // Unknown ids answer 200 with null, which the SDK keeps as null.
  const unknown = "3f1c0a52-0000-4000-8000-000000000001";
  const noGeneration = await checked(
    sdk,
    "getGenerationById (unknown)",
    () => leo.image.getGenerationById(unknown),
    `/generations/${unknown}`,
  );
  check(noGeneration.generationsByPk === null, `getGenerationById (unknown): ${show(noGeneration)}`);
  check(sdk.transport.last.body.replaceAll(" ", "") === '{"generations_by_pk":null}', sdk.transport.last.body);
  const notDeleted = await checked(sdk, "deleteGenerationById (unknown)", () => leo.image.deleteGenerationById(unknown));
  check(notDeleted.deleteGenerationsByPk === null, `deleteGenerationById (unknown): ${show(notDeleted)}`);
  const noVariation = await checked(
    sdk,
    "getVariationById (unknown)",
    () => leo.variation.getVariationById(unknown),
    `/variations/${unknown}`,
  );
  check(noVariation.generatedImageVariationGeneric.length === 0, `getVariationById (unknown): ${show(noVariation)}`);

  // Models by id: every catalogue model, in the SDK's shape; null for an unknown id.
  for (const id of modelIds) {
    const found = (await checked(sdk, `getModelById ${id}`, () => leo.models.getModelById(id), `/models/${id}`))
      .customModelsByPk;
    check(found?.id === id, `getModelById ${id}: ${show(found)}`);
    if (id === SDK_DEFAULT_MODEL) {
      check(found.sdVersion === "SDXL_LIGHTNING", `getModelById: sdVersion ${found.sdVersion}`);
    }
  }
  const noModel = await checked(sdk, "getModelById (unknown)", () => leo.models.getModelById(unknown), `/models/${unknown}`);
  check(noModel.customModelsByPk === null, `getModelById (unknown): ${show(noModel)}`);

  // The pricing calculator agrees with the apiCreditCost of a real job.
  for (const [width, height, count] of [
    [512, 512, 2],
    [1024, 768, 4],
    [64, 64, 1],
  ]) {
    const priced = await checked(sdk, "pricingCalculator", () =>
      leo.pricingCalculator.pricingCalculator({
        service: "IMAGE_GENERATION",
        serviceParams: { imageGeneration: { imageWidth: width, imageHeight: height, numImages: count } },
      }),
    );
    const job = await checked(sdk, "createGeneration", () =>
      leo.image.createGeneration({ prompt: "priced", width, height, numImages: count }),
    );
    const cost = priced.calculateProductionApiServiceCost.cost;
    const charged = job.sdGenerationJob.apiCreditCost;
    check(cost === charged, `pricing ${cost} != apiCreditCost ${charged} at ${width}x${height}x${count}`);
  }

  const megapixels = await checked(sdk, "pricingCalculator (UNIVERSAL_UPSCALER)", () =>
    leo.pricingCalculator.pricingCalculator({ service: "UNIVERSAL_UPSCALER", serviceParams: { universalUpscaler: { megapixel: 5 } } }),
  );
  const megapixelCost = megapixels.calculateProductionApiServiceCost.cost;
  check(megapixelCost === 5, `pricingCalculator (UNIVERSAL_UPSCALER): 5 megapixels cost ${megapixelCost}`);

  // Elements from the configuration; Easel trains no models or elements, so user lists are empty.
  const loras = (await checked(sdk, "listElements", () => leo.elements.listElements(), "/elements")).loras;
  check(loras.length === 1, `listElements: ${show(loras)}`);
  const [lora] = loras;
  check(lora.akUUID === "9f0d2c1e-5b7a-4e3c-8d21-6a4b3c2d1e0f", `listElements: akUUID ${lora.akUUID}`);
  check(lora.baseModel === "SDXL_1_0" && lora.weightDefault === 1, `listElements: ${show(lora)}`);
  const mine = await checked(
    sdk,
    "getCustomElementsByUserId",
    () => leo.elements.getCustomElementsByUserId(USER_ID),
    `/elements/user/${USER_ID}`,
  );
  check(Array.isArray(mine.userLoras) && mine.userLoras.length === 0, `getCustomElementsByUserId: ${show(mine)}`);
  const element = await checked(sdk, "getElementById", () => leo.elements.getElementById(1), "/elements/1");
  check(element.userLorasByPk === null, `getElementById: ${show(element)}`);
  const myModels = await checked(
    sdk,
    "getCustomModelsByUserId",
    () => leo.models.getCustomModelsByUserId(USER_ID),
    `/models/user/${USER_ID}`,
  );
  check(Array.isArray(myModels.customModels) && myModels.customModels.length === 0, `getCustomModelsByUserId: ${show(myModels)}`);

  // The prompt tools (built in).
  const random = (await checked(sdk, "promptRandom", () => leo.prompt.promptRandom())).promptGeneration;
  check(typeof random?.prompt === "string" && random.prompt.length > 20, `promptRandom: ${show(random)}`);
  check(Number.isInteger(random.apiCreditCost), `promptRandom: apiCreditCost ${show(random.apiCreditCost)}`);
  const improved = (
    await checked(sdk, "promptImprove", () =>
      leo.prompt.promptImprove({ prompt: "a cat", promptInstructions: "make it cosy" }),
    )
  ).promptGeneration;
  check(
    typeof improved?.prompt === "string" && improved.prompt.startsWith("a cat, ") && improved.prompt.endsWith("make it cosy"),
    `promptImprove: ${show(improved)}`,
  );
  check(Number.isInteger(improved.apiCreditCost), `promptImprove: apiCreditCost ${show(improved.apiCreditCost)}`);

  // Init images: a presigned upload policy, the upload itself (plain multipart to the policy's
  // URL, no key), image-to-image from it, one upload per policy, canvas pairs, deletion.
  const policy = (await checked(sdk, "uploadInitImage", () => leo.initImages.uploadInitImage({ extension: "png" })))
    .uploadInitImage;
  check(policy != null, "uploadInitImage: uploadInitImage is null");
  check(typeof policy.id === "string" && typeof policy.url === "string", `uploadInitImage: ${show(policy)}`);
  const initId = policy.id;
  const fields = policyFields(policy.fields, policy.key, "uploadInitImage");
  check(fields["Content-Type"] === "image/png", `uploadInitImage: Content-Type field in ${policy.fields}`);
  const picture = png(64, 64, [220, 20, 20]);
  const uploaded = await upload(policy.url, fields, picture);
  check(uploaded.status === 204, `upload to ${policy.url}: status ${uploaded.status}: ${uploaded.body}`);

  const initPath = `/init-image/${initId}`;
  const readInit = async (where) =>
    (await checked(sdk, where, () => leo.initImages.getInitImageById(initId), initPath)).initImagesByPk;
  const found = await readInit("getInitImageById");
  check(found?.id === initId, `getInitImageById: ${show(found)}`);
  check(typeof found.createdAt === "string" && found.createdAt !== "", `getInitImageById: createdAt ${show(found.createdAt)}`);
  const served = await download(found.url, "init image", "image/png");
  check(Buffer.from(served).equals(picture), `init image: the download (${served.length} bytes) is not the upload (${picture.length})`);

  const img2img = await checked(sdk, "createGeneration (initImageId)", () =>
    leo.image.createGeneration({
      prompt: "a blue sky over green hills",
      width: 64,
      height: 64,
      numImages: 1,
      initImageId: initId,
      initStrength: 0.5,
    }),
  );
  const img2imgId = img2img.sdGenerationJob?.generationId;
  check(typeof img2imgId === "string", `createGeneration (initImageId): ${show(img2img)}`);
  const readImg2img = async (plainPath) =>
    (
      await checked(
        sdk,
        "getGenerationById (initImageId)",
        () => leo.image.getGenerationById(img2imgId),
        plainPath,
      )
    ).generationsByPk;
  await waitFor(readImg2img, (g) => g != null && g.status !== "PENDING", "image-to-image generation");
  const fromUpload = await readImg2img(`/generations/${img2imgId}`);
  check(fromUpload.status === "COMPLETE", `image-to-image generation: status ${fromUpload.status}`);
  check(fromUpload.initStrength === 0.5, `image-to-image generation: initStrength ${fromUpload.initStrength}`);
  check(fromUpload.generatedImages.length === 1, `image-to-image generation: ${fromUpload.generatedImages.length} images`);
  await download(fromUpload.generatedImages[0].url, "image-to-image result");

  const reused = await upload(policy.url, fields, picture);
  check(reused.status === 403, `second upload to the same policy: status ${reused.status}, not 403: ${reused.body}`);
  check(reused.body.includes("already used"), `second upload to the same policy: body ${reused.body}`);

  const pair = (
    await checked(sdk, "uploadCanvasInitImage", () =>
      leo.initImages.uploadCanvasInitImage({ initExtension: "png", maskExtension: "png" }),
    )
  ).uploadCanvasInitImage;
  check(pair != null, "uploadCanvasInitImage: uploadCanvasInitImage is null");
  check(pair.initImageId !== pair.maskImageId, `uploadCanvasInitImage: one id for both halves: ${show(pair)}`);
  for (const side of ["init", "mask"]) {
    const where = `uploadCanvasInitImage (${side})`;
    const [id, url] = [pair[`${side}ImageId`], pair[`${side}Url`]];
    check(typeof id === "string" && typeof url === "string", `${where}: id ${show(id)}, url ${show(url)}`);
    const sideFields = policyFields(pair[`${side}Fields`], pair[`${side}Key`], where);
    const sent = await upload(url, sideFields, png(32, 32, [200, 200, 200]));
    check(sent.status === 204, `${where}: upload to ${url}: status ${sent.status}: ${sent.body}`);
  }

  const deletedInit = await checked(sdk, "deleteInitImageById", () => leo.initImages.deleteInitImageById(initId));
  check(deletedInit.deleteInitImagesByPk?.id === initId, `deleteInitImageById: ${show(deletedInit)}`);
  const deletedAgain = await checked(sdk, "deleteInitImageById (again)", () =>
    leo.initImages.deleteInitImageById(initId),
  );
  check(deletedAgain.deleteInitImagesByPk === null, `deleteInitImageById (again): ${show(deletedAgain)}`);
  const goneInit = await readInit("getInitImageById (deleted)");
  check(goneInit === null, `getInitImageById (deleted): ${show(goneInit)}`);

  // An operation Easel does not serve says so by name: 501 in the error shape, which the SDK
  // throws as an SDKError ("Unexpected Status or Content-Type: Status 501 ... Body: ...").
  const unserved = await thrown("getDatasetById", () => leo.dataset.getDatasetById(unknown));
  check(unserved instanceof errors.SDKError, `getDatasetById: threw ${unserved.name}, not SDKError`);
  check(unserved.statusCode === 501, `getDatasetById: status ${unserved.statusCode}`);
  check(/getDatasetById.*not supported/.test(unserved.message), `getDatasetById: message ${unserved.message}`);
  const unservedBody = JSON.parse(unserved.body);
  check(
    unservedBody.path === "$" && unservedBody.code === "not-supported" && unservedBody.error.includes("getDatasetById"),
    `getDatasetById: body ${unserved.body}`,
  );
  console.log(`getDatasetById throws ${unserved.name}: ${unserved.message.split("\n")[0]}`);

  const stranger = client("not-a-key");
  const refused = await thrown("wrong key", () => stranger.leo.user.getUserSelf());
  check(refused instanceof errors.SDKError, `wrong key: threw ${refused.name}, not SDKError`);
  check(refused.statusCode === 401, `wrong key: status ${refused.statusCode}`);
  check(JSON.parse(refused.body).path === "$", `wrong key: body ${refused.body}`);

  console.log("typescript SDK check passed");
}

main().catch((error) => {
  console.error(`FAILED: ${error instanceof Failure ? error.message : (error?.stack ?? error)}`);
  process.exit(1);
});
