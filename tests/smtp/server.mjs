// A real SMTP server for the external/email tests (nodemailer's smtp-server).
//
// Environment: PORT (required); AUTH_USER and AUTH_PASS (when set, AUTH is required and
// only these credentials pass); TLS_CERT and TLS_KEY (PEM files: STARTTLS is offered);
// SECURE=1 (implicit TLS from the first byte instead of STARTTLS).
// Prints READY once listening, then one line `MESSAGE <json>` per accepted message with
// the envelope (mailFrom, rcptTo), the authenticated user, whether the session was
// encrypted, and the raw message (data). Exits when stdin closes.
import fs from 'node:fs';
import { SMTPServer } from 'smtp-server';

const port = Number(process.env.PORT);
const authUser = process.env.AUTH_USER || '';
const authPass = process.env.AUTH_PASS || '';
const tls = process.env.TLS_CERT && process.env.TLS_KEY
  ? { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }
  : null;

const options = {
  secure: process.env.SECURE === '1',
  authOptional: !authUser,
  // Plain-text AUTH only in tests that use no TLS at all.
  allowInsecureAuth: !tls,
  disabledCommands: tls ? [] : ['STARTTLS'],
  logger: false,
  onAuth(auth, session, callback) {
    if (authUser && auth.username === authUser && auth.password === authPass) {
      callback(null, { user: auth.username });
    } else {
      callback(new Error('Invalid username or password'));
    }
  },
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      const record = {
        mailFrom: session.envelope.mailFrom && session.envelope.mailFrom.address,
        rcptTo: session.envelope.rcptTo.map((r) => r.address),
        user: session.user || null,
        secure: Boolean(session.secure),
        data: Buffer.concat(chunks).toString('utf8'),
      };
      process.stdout.write(`MESSAGE ${JSON.stringify(record)}\n`);
      callback(null, 'queued');
    });
  },
};
if (tls) {
  options.cert = tls.cert;
  options.key = tls.key;
}

const server = new SMTPServer(options);
server.on('error', (e) => process.stderr.write(`smtp-server error: ${e.message}\n`));
server.listen(port, '127.0.0.1', () => process.stdout.write('READY\n'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
