import Foundation

/// A small command-line option parser shared by both daemons.
///
/// It accepts the original kalavara's spelling (`-p 6000 -v URL URL ...`) and long forms
/// (`--port 6000`, `--port=6000`). Every failure is a `UsageError` whose message fits on one
/// line, so `main` can print it and exit with status 2 instead of crashing.
public struct CommandLineOptions {
    /// One option a daemon understands.
    public struct Option {
        /// How many values the option takes: none (a switch), one, or all up to the next option.
        public enum Arity { case flag, one, many }
        public let names: [String]
        public let valueName: String
        public let help: String
        public let arity: Arity
        public let defaultValue: String?

        public init(_ names: [String], value valueName: String = "", arity: Arity = .one,
                    default defaultValue: String? = nil, help: String) {
            self.names = names
            self.valueName = valueName
            self.help = help
            self.arity = arity
            self.defaultValue = defaultValue
        }

        var key: String { names.last! }
    }

    /// A one-line complaint about the command line.
    public struct UsageError: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    public let command: String
    public let summary: String
    public let options: [Option]
    private var values: [String: [String]] = [:]
    /// True when `-h`/`--help` was given: the caller prints `usage` and exits 0.
    public private(set) var helpRequested = false

    public init(command: String, summary: String, options: [Option]) {
        self.command = command
        self.summary = summary
        self.options = options + [Option(["-h", "--help"], arity: .flag, help: "Show this help.")]
    }

    /// Parses `arguments` (without the program name).
    public mutating func parse(_ arguments: [String]) throws {
        var index = 0
        while index < arguments.count {
            var word = arguments[index]
            index += 1
            var inlineValue: String?
            if word.hasPrefix("--"), let eq = word.firstIndex(of: "=") {
                inlineValue = String(word[word.index(after: eq)...])
                word = String(word[..<eq])
            }
            guard let option = options.first(where: { $0.names.contains(word) }) else {
                throw UsageError("unknown option '\(word)' (see --help)")
            }
            switch option.arity {
            case .flag:
                if inlineValue != nil { throw UsageError("option \(word) takes no value") }
                if option.key == "--help" { helpRequested = true }
                values[option.key] = ["true"]
            case .one:
                let value: String
                if let inlineValue {
                    value = inlineValue
                } else {
                    guard index < arguments.count, !Self.looksLikeOption(arguments[index]) else {
                        throw UsageError("option \(word) needs a value \(option.valueName)")
                    }
                    value = arguments[index]
                    index += 1
                }
                if values[option.key] != nil { throw UsageError("option \(word) given twice") }
                values[option.key] = [value]
            case .many:
                var list = values[option.key] ?? []
                if let inlineValue {
                    list.append(inlineValue)
                } else {
                    let start = list.count
                    while index < arguments.count, !Self.looksLikeOption(arguments[index]) {
                        list.append(arguments[index])
                        index += 1
                    }
                    if list.count == start {
                        throw UsageError("option \(word) needs at least one \(option.valueName)")
                    }
                }
                values[option.key] = list
            }
        }
    }

    private static func looksLikeOption(_ word: String) -> Bool {
        word.count > 1 && word.hasPrefix("-") && !word.dropFirst().allSatisfy(\.isNumber)
    }

    private func option(_ name: String) -> Option {
        guard let option = options.first(where: { $0.names.contains(name) }) else {
            preconditionFailure("option \(name) was never declared")
        }
        return option
    }

    /// The value of a single-valued option, or its default.
    public func string(_ name: String) -> String? {
        let option = option(name)
        return values[option.key]?.first ?? option.defaultValue
    }

    /// A required single-valued option.
    public func requiredString(_ name: String) throws -> String {
        guard let value = string(name) else {
            throw UsageError("missing required option \(option(name).names.joined(separator: "/"))")
        }
        return value
    }

    /// All values of a repeatable option, in order.
    public func strings(_ name: String) -> [String] { values[option(name).key] ?? [] }

    /// An integer option within `range`.
    public func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = string(name) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw UsageError("option \(option(name).names.last!) wants a whole number in "
                             + "\(range.lowerBound)...\(range.upperBound), not '\(text)'")
        }
        return value
    }

    /// A duration option given in seconds (fractions allowed).
    public func seconds(_ name: String) throws -> Double? {
        guard let text = string(name) else { return nil }
        guard let value = Double(text), value > 0, value.isFinite else {
            throw UsageError("option \(option(name).names.last!) wants a positive number of seconds, not '\(text)'")
        }
        return value
    }

    /// The `--help` text.
    public var usage: String {
        var lines = ["\(summary)", "", "Usage: \(command) [options]", "", "Options:"]
        for option in options {
            var left = option.names.joined(separator: ", ")
            if !option.valueName.isEmpty {
                left += " " + option.valueName + (option.arity == .many ? " ..." : "")
            }
            var help = option.help
            if let defaultValue = option.defaultValue { help += " (default: \(defaultValue))" }
            lines.append("  " + left.padding(toLength: max(left.count, 28), withPad: " ", startingAt: 0)
                         + "  " + help)
        }
        return lines.joined(separator: "\n")
    }
}
