-- Shared by the miltertest scripts: a session as Sendmail presents it.
--
-- Globals set with miltertest -D: SOCKET (unix:PATH or inet:PORT@HOST),
-- CLIENT (the client address, or "unspec" to give it only in {client_addr}),
-- CLIENT_ADDR (the {client_addr} macro; defaults to CLIENT), AUTH (the
-- {auth_authen} macro; empty when not authenticated).

function fail(text)
  error(text, 2)
end

-- miltertest exits 1 without a word on a Lua error: say what failed.
function run(name, body)
  local okay, err = pcall(body)
  if not okay then
    mt.echo("FAIL: " .. name .. ": " .. tostring(err))
    error(err, 0)
  end
  mt.echo(name .. ": ok")
end

-- Each mt.* call returns nil on success or an error string.
function ok(result, what)
  if result ~= nil then
    fail(what .. ": " .. tostring(result))
  end
end

function expect_reply(conn, wanted, stage)
  local got = mt.getreply(conn)
  if got ~= wanted then
    fail(string.format("%s: milter replied %q, expected %q", stage,
                       string.char(got), string.char(wanted)))
  end
end

-- Connect, send Sendmail's connect-time macros and the connection info, HELO.
function sendmail_connect()
  local conn = mt.connect(SOCKET, 40, 0.25)
  if conn == nil then
    fail("cannot connect to " .. SOCKET)
  end
  mt.set_timeout(20)
  local client_addr = CLIENT_ADDR or CLIENT
  -- Sendmail's confMILTER_MACROS_CONNECT, as contrib/sendmail/mx6milter.mc sets it.
  ok(mt.macro(conn, SMFIC_CONNECT,
              "j", "mx.example.org",
              "_", "client.example.net [" .. client_addr .. "]",
              "{daemon_name}", "MTA-v6",
              "{if_name}", "mx.example.org",
              "{if_addr}", "2001:db8::25",
              "{client_addr}", client_addr), "connect macros")
  ok(mt.conninfo(conn, "client.example.net", CLIENT), "conninfo")
  expect_reply(conn, SMFIR_CONTINUE, "connect")
  ok(mt.helo(conn, "mail.example.net"), "helo")
  expect_reply(conn, SMFIR_CONTINUE, "helo")
  return conn
end

-- MAIL, RCPT and the headers, with Sendmail's envelope macros.
function sendmail_envelope(conn, extra_headers)
  ok(mt.macro(conn, SMFIC_MAIL,
              "i", "4ABCDEF12",
              "{auth_type}", AUTH and AUTH ~= "" and "PLAIN" or "",
              "{auth_authen}", AUTH or "",
              "{mail_mailer}", "esmtp",
              "{mail_host}", "example.net",
              "{mail_addr}", "sender@example.net"), "mail macros")
  ok(mt.mailfrom(conn, "<sender@example.net>"), "mailfrom")
  expect_reply(conn, SMFIR_CONTINUE, "mail")
  ok(mt.macro(conn, SMFIC_RCPT, "{rcpt_mailer}", "local", "{rcpt_addr}", "user@example.org"),
     "rcpt macros")
  ok(mt.rcptto(conn, "<user@example.org>"), "rcptto")
  expect_reply(conn, SMFIR_CONTINUE, "rcpt")
  ok(mt.header(conn, "From", "Sender <sender@example.net>"), "header From")
  ok(mt.header(conn, "To", "user@example.org"), "header To")
  ok(mt.header(conn, "Subject", "miltertest"), "header Subject")
  ok(mt.header(conn, "Message-ID", "<miltertest@example.net>"), "header Message-ID")
  for _, h in ipairs(extra_headers or {}) do
    ok(mt.header(conn, h[1], h[2]), "header " .. h[1])
  end
end
