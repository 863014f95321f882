// A thin command-line wrapper around the TypeScript `age-encryption` package, an age
// implementation written independently of the Rust one Vellum uses. Vellum's interop
// tests drive it to prove both directions: what vellum seals this opens, and what
// this seals vellum opens.
//
//   node age.mjs keygen                    identity file on stdout
//   node age.mjs recipient IDENTITY_FILE   the identity's age1… recipient
//   node age.mjs seal RECIPIENT...         stdin plaintext -> stdout ciphertext
//   node age.mjs open IDENTITY_FILE        stdin ciphertext -> stdout plaintext
import { readFileSync } from "node:fs";
import * as age from "age-encryption";

function identitiesIn(path) {
  return readFileSync(path, "utf8")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

function stdin() {
  return new Uint8Array(readFileSync(0));
}

const [command, ...args] = process.argv.slice(2);
switch (command) {
  case "keygen": {
    const identity = await age.generateX25519Identity();
    process.stdout.write(`# public key: ${await age.identityToRecipient(identity)}\n${identity}\n`);
    break;
  }
  case "recipient": {
    process.stdout.write(`${await age.identityToRecipient(identitiesIn(args[0])[0])}\n`);
    break;
  }
  case "seal": {
    const encrypter = new age.Encrypter();
    for (const recipient of args) encrypter.addRecipient(recipient);
    process.stdout.write(await encrypter.encrypt(stdin()));
    break;
  }
  case "open": {
    const decrypter = new age.Decrypter();
    for (const identity of identitiesIn(args[0])) decrypter.addIdentity(identity);
    process.stdout.write(await decrypter.decrypt(stdin(), "uint8array"));
    break;
  }
  default:
    process.stderr.write("usage: node age.mjs keygen|recipient|seal|open ...\n");
    process.exit(2);
}
