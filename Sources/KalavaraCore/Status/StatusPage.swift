import Foundation

/// The master's status page (`GET /`): one self-contained HTML document, no scripts, no
/// external assets, refreshing itself every `refreshSeconds`. Laid out as a table on a
/// wide screen and as one card per volume on a phone.
public enum StatusPage {
    static let refreshSeconds = 2

    static func html(_ status: ClusterStatus) -> String {
        let up = status.volumes.filter { $0.state == "up" }.count
        var page = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta http-equiv="refresh" content="\(refreshSeconds)">
        <title>Kalavara · \(escape(status.master))</title>
        <style>\(style)</style></head><body>
        <header><h1>Kalavara</h1><span class="muted">\(escape(status.master)) · v\(escape(status.version))
        · \(status.signed ? "signed cluster" : "open cluster")</span></header>
        <section class="cards">
        \(card("Volumes up", "\(up) / \(status.volumes.count)", up < status.volumes.count ? "warn" : "ok", id: "volumes-up"))
        \(card("Index keys", formatCount(status.indexKeys), nil, id: "index-keys"))
        \(card("Index disk free", formatBytes(status.indexDiskFreeBytes), nil, id: "index-free"))
        \(card("Replicas", String(status.replicas), nil, id: "replicas"))
        \(card("Zones", String(status.zoneCount), status.zoneCount < status.replicas ? "warn" : "ok", id: "zones"))
        </section>
        """
        if status.zoneCount < status.replicas, !status.volumes.isEmpty {
            page += "<p class=\"warn\" id=\"zones-warning\">The volumes span \(status.zoneCount) zone(s), fewer than the "
                + "\(status.replicas) replicas: some keys have two copies in one zone, and losing that zone loses both "
                + "(start volumes with <code>--zone</code>).</p>\n"
        }
        page += healing(status)
        if let group = status.group, !group.group.isEmpty { page += masters(group) }
        page += "<h2>Volumes</h2>\n<table id=\"volumes\"><thead><tr><th>Volume</th><th>Zone</th><th>State</th><th>Disk</th><th>Keys</th>"
            + "<th>Requests</th></tr></thead><tbody>\n"
        for volume in status.volumes {
            let used = volume.usedFraction
            let bar = used.map { fraction in
                "<div class=\"bar\" title=\"\(Int((fraction * 100).rounded()))% used\"><span style=\"width:\(Int((fraction * 100).rounded()))%\""
                    + (fraction > 0.9 ? " class=\"full\"" : "") + "></span></div>"
            } ?? ""
            let free = volume.freeBytes.map { "\(formatBytes($0)) free" + (volume.totalBytes.map { " of \(formatBytes($0))" } ?? "") } ?? "unknown"
            page += "<tr class=\"volume\" data-state=\"\(escape(volume.state))\">"
                + "<td data-label=\"Volume\" class=\"url\">\(escape(volume.url))</td>"
                + "<td data-label=\"Zone\">\(escape(volume.zone ?? Placement.defaultZone))</td>"
                + "<td data-label=\"State\"><span class=\"state \(escape(volume.state))\">\(escape(volume.state))</span></td>"
                + "<td data-label=\"Disk\">\(bar)<small>\(free)</small></td>"
                + "<td data-label=\"Keys\">\(volume.keys.map(formatCount) ?? "–")</td>"
                + "<td data-label=\"Requests\">\(volume.requestRate.map { String(format: "%.0f/s", $0) } ?? "–")</td></tr>\n"
        }
        page += "</tbody></table>\n<h2>Recent errors</h2>\n"
        if status.recentEvents.isEmpty {
            page += "<p class=\"muted\" id=\"events\">None since the master started.</p>\n"
        } else {
            page += "<ul id=\"events\">\n"
            for event in status.recentEvents {
                page += "<li class=\"\(escape(event.level))\"><time>\(formatTime(event.time))</time> "
                    + "<b>\(escape(event.level))</b> \(escape(event.message))</li>\n"
            }
            page += "</ul>\n"
        }
        page += "<footer class=\"muted\">Updated \(formatTime(status.time)) · refreshes every \(refreshSeconds) s · "
            + "<a href=\"/admin/status\">JSON</a> · <a href=\"/metrics\">metrics</a></footer>\n</body></html>\n"
        return page
    }

    /// The master group: who leads, and each standby's place.
    private static func masters(_ group: ClusterStatus.Group) -> String {
        var html = "<h2>Masters</h2>\n<p class=\"muted\">group \(escape(group.group)) · epoch \(group.epoch) · "
            + (group.leader.map { "leader \(escape($0))" } ?? "<b>no leader</b>") + "</p>\n"
            + "<table id=\"masters\"><thead><tr><th>Master</th><th>Role</th><th>In sync</th><th>Lag</th></tr></thead><tbody>\n"
        for member in group.masters {
            html += "<tr class=\"master\" data-role=\"\(escape(member.role))\"><td data-label=\"Master\" class=\"url\">\(escape(member.url))</td>"
                + "<td data-label=\"Role\">\(escape(member.role))</td>"
                + "<td data-label=\"In sync\">\(member.inSync ? "yes" : "no")</td>"
                + "<td data-label=\"Lag\">\(member.lagMs) ms</td></tr>\n"
        }
        return html + "</tbody></table>\n"
    }

    private static func healing(_ status: ClusterStatus) -> String {
        var parts: [String] = []
        let repair = status.repair
        if repair.running {
            let total = max(status.indexKeys, repair.scanned, 1)
            let fraction = min(1, Double(repair.scanned) / Double(total))
            parts.append("<p id=\"repair\"><b>Repair pass running</b>: \(formatCount(repair.scanned)) of about \(formatCount(total)) "
                         + "keys examined, \(formatCount(repair.underReplicated)) short of copies, \(formatCount(repair.misplaced)) misplaced, "
                         + "\(formatCount(repair.copied)) copies made (\(formatBytes(repair.bytesCopied)))"
                         + (repair.errors > 0 ? ", \(repair.errors) errors" : "") + "</p>"
                         + "<div class=\"bar wide\"><span style=\"width:\(Int((fraction * 100).rounded()))%\"></span></div>")
        }
        if status.rebuild.running {
            let rebuild = status.rebuild
            let fraction = rebuild.volumesTotal > 0 ? Double(rebuild.volumesDone) / Double(rebuild.volumesTotal) : 0
            parts.append("<p id=\"rebuild\"><b>Index rebuild running</b>: \(rebuild.volumesDone) of \(rebuild.volumesTotal) volumes read, "
                         + "\(formatCount(rebuild.keysFound)) keys found</p>"
                         + "<div class=\"bar wide\"><span style=\"width:\(Int((fraction * 100).rounded()))%\"></span></div>")
        }
        for volume in status.volumes where volume.state == "draining" {
            parts.append("<p class=\"draining\"><b>Draining</b> \(escape(volume.url)): \(volume.keys.map(formatCount) ?? "?") files left</p>")
        }
        if parts.isEmpty {
            return "<h2>Healing</h2>\n<p class=\"muted\" id=\"healing\">Nothing to do: \(repair.passes) placement pass(es) since start-up, "
                + "\(formatCount(repair.copied)) copies made.</p>\n"
        }
        return "<h2>Healing</h2>\n<section id=\"healing\" class=\"healing\">" + parts.joined(separator: "\n") + "</section>\n"
    }

    private static func card(_ label: String, _ value: String, _ tone: String?, id: String) -> String {
        "<div class=\"card \(tone ?? "")\" id=\"\(id)\"><small>\(escape(label))</small><strong>\(escape(value))</strong></div>"
    }

    /// Text for HTML: every markup character escaped (keys, URLs and log lines are anyone's input).
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    public static func formatBytes(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) B" : String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[unit])
    }

    public static func formatCount(_ count: Int) -> String {
        let digits = String(count)
        var out = ""
        for (index, character) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0, character != "-" { out.append(",") }
            out.append(character)
        }
        return out
    }

    static func formatTime(_ time: Double) -> String {
        var seconds = Int(time)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%02d:%02d:%02d UTC", parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    private static let style = """
    body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:12px;color:#1d232a;background:#f6f7f9}
    header{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px}h1{margin:0;font-size:22px}h2{font-size:17px;margin:18px 0 6px}
    .muted{color:#66707a}.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:8px;margin-top:10px}
    .card{background:#fff;border-radius:8px;padding:10px;box-shadow:0 1px 2px #0002}.card small{display:block;color:#66707a}
    .card strong{font-size:20px}.card.warn strong{color:#b3261e}.card.ok strong{color:#1b7f3b}
    table{width:100%;border-collapse:collapse;background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px #0002}
    th,td{text-align:left;padding:8px;border-bottom:1px solid #eceff2;vertical-align:top}.url{font-family:ui-monospace,monospace;word-break:break-all}
    .state{padding:2px 8px;border-radius:10px;font-size:13px;background:#e6e8eb}.state.up{background:#d7f2df;color:#13632c}
    .state.down{background:#fde2e0;color:#9c1d14}.state.out{background:#3b1614;color:#fff}.state.draining{background:#fff1cc;color:#7a5300}
    .bar{height:8px;background:#e6e8eb;border-radius:4px;overflow:hidden;margin:3px 0;min-width:90px}.bar span{display:block;height:100%;background:#3a7bd5}
    .bar span.full{background:#b3261e}.bar.wide{max-width:none}.healing{background:#fff;border-radius:8px;padding:6px 10px;box-shadow:0 1px 2px #0002}
    ul{background:#fff;border-radius:8px;padding:6px 10px 6px 28px;box-shadow:0 1px 2px #0002}li{margin:3px 0;word-break:break-word}
    li.error b,li.critical b{color:#b3261e}li.warning b{color:#7a5300}p.warn{color:#7a5300}time{color:#66707a;font-size:13px}footer{margin-top:16px;font-size:13px}
    @media (max-width:600px){thead{display:none}table,tbody,tr,td{display:block;width:auto}tr{border-bottom:6px solid #f6f7f9}
    td{border:0;padding:4px 10px}td::before{content:attr(data-label);display:block;font-size:12px;color:#66707a}}
    """
}
