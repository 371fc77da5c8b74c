'use strict';
// Preloaded into s3rver by tests/rig/s3rver.py (`node --require reqlog.js ...`):
// appends one JSON line per answered HTTP request to $RIG_S3RVER_REQLOG.
// s3rver's own log cannot serve as a request log (its logger cuts the method
// and path off the line). The line is written synchronously *before* the last
// byte of the response goes out, so once a client has read a whole response,
// that request is in the file.
const fs = require('fs');
const http = require('http');

const logPath = process.env.RIG_S3RVER_REQLOG;
if (logPath) {
  const fd = fs.openSync(logPath, 'a');
  const origEmit = http.Server.prototype.emit;
  http.Server.prototype.emit = function emit(event, req, res) {
    if (event === 'request') {
      const origEnd = res.end;
      let logged = false;
      res.end = function end(...args) {
        if (!logged) {
          logged = true;
          const auth = req.headers['authorization'] || '';
          fs.writeSync(
            fd,
            JSON.stringify({
              method: req.method,
              path: req.url,
              status: res.statusCode,
              x_amz_date: req.headers['x-amz-date'] || null,
              auth: auth.split(' ')[0] || null,
            }) + '\n',
          );
        }
        return origEnd.apply(this, args);
      };
    }
    return origEmit.apply(this, arguments);
  };
}
